"""The preprocessing modes' names, without Keras: the CLI's help text reads them at start-up.

The architectures' registry checks specs against them and `architectures/preprocessing.py` applies
them; what each mode computes is documented on `PREPROCESSING_MODES`.
"""

PREPROCESSING_MODES = ("caffe", "tf", "torch", "scale", "none", "cifar10", "cifar100")
"""How raw 0..255 RGB pixels become model input (keras.applications' `preprocess_input` modes, and the
CIFAR normalisations): `caffe` RGB->BGR minus the ImageNet mean; `tf` x/127.5-1; `torch` x/255 minus
the ImageNet mean, over its std; `cifar10`, `cifar100` the same with that dataset's mean and std
(registry.RGB_MEAN_STD); `scale` x/255; `none` the model takes raw pixels."""

PREPROCESSING_HELP = (f"how pixels are scaled for the base: {', '.join(PREPROCESSING_MODES[:-1])} or "
                      f"{PREPROCESSING_MODES[-1]} (default: the base's; required for a saved .keras base)")
"""The --preprocessing help of the commands that take a base (extract, finetune, audit)."""
