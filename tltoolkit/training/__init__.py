"""Training: the settings (`config`), what trains (`policy`), phase 1's head on cached features (`head`),
phase 2's recipes and pieces (`phases`), the run directory (`run`), `--plan` (`plan`), `tf.distribute`
strategies (`distribute`) and `finetune`, which ties them together."""
