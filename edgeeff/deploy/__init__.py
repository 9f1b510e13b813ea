"""What runs on the laptop to put an exported model on a device: ``edgeeff bundle`` (a folder
and archive with the model, a wheel of edgeeff and a start script) and ``edgeeff firmware``
(builds and checks the TFLite Micro project)."""
