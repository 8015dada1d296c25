# %% [markdown]
# # Training on several accelerators with tf.distribute
#
# `--strategy` trains through `tf.distribute`: `mirrored` copies the model onto every GPU of the machine (each replica takes a slice of the global batch, gradients are summed across them), `tpu` onto the cores of a TPU, `multiworker` across machines (`TF_CONFIG`; only the chief writes the run). `auto`, the default, mirrors over several GPUs and uses the one device otherwise.
#
# - **Colab**: with a TPU runtime, `--strategy tpu` (8 cores); with a GPU runtime, `mirrored` (one GPU: one replica, same code). Flowers (`tfds:tf_flowers`) on ResNet-50 with ImageNet weights, `conv5` fine-tuned.
# - **Smoke**: the CPU split into two *logical* devices, so `mirrored` runs two real replicas on any laptop; the embedded digits on the embedded ResNet-20. It shows the mechanics, not a speed-up: both replicas share the same cores.

# %% tags=["parameters"]
OUT = pathlib.Path("recipe-output/06_multi_accelerator")
if SMOKE:
    LOGICAL_CPUS, STRATEGY = 2, "mirrored"
    SETTINGS = {"base": "resnet20_cifar", "weights": str(ROOT / "data/backbone/digits04_resnet20_cifar.weights.h5"),
                "data": str(ROOT / "data/digits59"), "freeze_until": "conv4", "augment": "none",
                "epochs": 10, "fine_tune_epochs": 2, "batch_size": 32}
else:
    LOGICAL_CPUS = 0
    STRATEGY = "tpu" if os.path.exists("/dev/accel0") or "COLAB_TPU_ADDR" in os.environ else "mirrored"
    SETTINGS = {"base": "resnet50", "weights": "imagenet", "data": "tfds:tf_flowers", "freeze_until": "conv5",
                "augment": "standard", "epochs": 10, "fine_tune_epochs": 5, "batch_size": 256,  # the global batch
                "mixed_precision": STRATEGY == "mirrored"}  # float16 on GPUs; TPUs compute in bfloat16 anyway

# %% [markdown]
# ## 1. Devices, before TensorFlow starts
#
# Logical devices can only be configured before TensorFlow initialises its runtime, so this cell runs before anything else touches TensorFlow (importing it is fine; creating a tensor or listing logical devices is not). In a notebook that already ran TensorFlow, restart the kernel first.

# %%
import tensorflow as tf

tf.get_logger().setLevel("WARNING")  # tf.distribute logs every all-reduce at INFO
if LOGICAL_CPUS:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * LOGICAL_CPUS)
for kind in ("CPU", "GPU", "TPU"):
    print(kind, [device.name for device in tf.config.list_logical_devices(kind)])

# %% [markdown]
# ## 2. What a strategy does
#
# `make_strategy` is what `finetune --strategy` calls. Variables created in its scope are mirrored on every replica, and each global batch is split between them:

# %%
from tltoolkit.training.distribute import make_strategy

strategy = make_strategy(STRATEGY)
print(type(strategy).__name__, "with", strategy.num_replicas_in_sync, "replicas:", strategy.extended.worker_devices)
with strategy.scope():
    weight = tf.Variable(1.0)
print("a variable made in its scope:", type(weight).__name__)
global_batch = tf.data.Dataset.range(8).batch(8)
for batch in strategy.experimental_distribute_dataset(global_batch):
    for device, part in zip(strategy.extended.worker_devices, strategy.experimental_local_results(batch)):
        print(f"  {device} gets {part.numpy()}")

# %% [markdown]
# ## 3. Fine-tune with `--strategy`
#
# The Python call below equals `tltoolkit finetune ... --strategy mirrored` (or `tpu`). `batch_size` is the global batch: each replica computes `batch_size / replicas` images per step. For comparison the same run on one device (`strategy: none`).

# %%
import json
import time

results = {}
for strategy_name in (STRATEGY, "none"):
    print(f"\n--- strategy: {strategy_name} ---")
    started = time.perf_counter()
    entry = tltoolkit.finetune({**SETTINGS, "strategy": strategy_name, "out": str(OUT / f"run-{strategy_name}")},
                               force=True, progress=False)
    results[strategy_name] = {"replicas": entry["replicas"], "seconds": time.perf_counter() - started,
                              **{f"phase {p['phase']} val acc": p.get("val_accuracy") for p in entry["phases"]}}

# %%
import pandas as pd
from IPython.display import Image, display

display(pd.DataFrame(results).T)
display(Image(filename=str(OUT / f"run-{STRATEGY}/plots/curves.png")))

# %% [markdown]
# **Reading it.** Both runs train the same model on the same data; their accuracies differ only by the order of floating-point sums (BatchNormalization stays frozen, so the split batch does not change its statistics). In smoke mode the two replicas share the same two CPU cores, so the time says nothing about speed-up. On several GPUs or a TPU the step time stays about the same while each step sees `replicas` times more images; raise `batch_size` with the replica count (and the learning rates with it, or keep the default schedule's warm-up) to use them.
