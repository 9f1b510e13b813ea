"""Images in, model-ready pixels and labels out: decoding (:mod:`.images`, OpenCV) and the one
labelled-folder reader with its seeded stratified split (:mod:`.folder`).

This folder also holds package data files (ImageNet labels and wnids, the accuracy
measurements), read by :mod:`edgeeff.core.labels` and :mod:`edgeeff.core.accuracy`.
"""
