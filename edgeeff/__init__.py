"""edgeeff: EfficientNet for phones, single-board computers and microcontrollers."""

__version__ = "0.1.0"
