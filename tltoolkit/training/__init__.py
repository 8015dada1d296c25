"""Training: the growth policy (`policy`), the two phases (`phases`), the run directory (`run`),
`tf.distribute` strategies (`distribute`) and `finetune`, which ties them together."""
