"""Using a trained classifier: loading it (`classifier`), test-time augmentation (`tta`), predicting
(`predict`) and evaluating (`evaluation`). `tltoolkit.predict` and `tltoolkit.evaluate` are the two
entry points.

A classifier is a run directory (`model.keras`, `class_index.json`, `config.json`) or a `.keras` file
(labels from a `labels.txt` or `class_index.json` beside it). Its model takes raw uint8 RGB images at
the training size and returns class probabilities. Ensembles average the probabilities (never the
weights) of several classifiers with the same classes.
"""
