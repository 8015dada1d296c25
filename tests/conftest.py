import os

# TensorFlow's native log lines are noise in test output; set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

# Files whose every test is heavy (full-size models built, torch parity, training runs, notebooks,
# distributed strategies): `make test-fast` (pytest -m "not slow") skips them. Heavy tests in the
# other files carry @pytest.mark.slow themselves.
SLOW_FILES = {
    "test_any_base.py", "test_checkpoints.py", "test_classic.py", "test_densenet.py", "test_distribute.py",
    "test_inception.py", "test_registry.py", "test_resnet.py", "test_resnet_v2.py",
    "test_sample_data.py", "test_torch_parity.py", "test_variant_parity.py", "test_vgg.py",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
