import os

# TensorFlow's native log lines are noise in test output; set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
