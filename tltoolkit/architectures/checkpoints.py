"""PyTorch checkpoints (timm safetensors, torchvision `.pth`) read without torch and converted into our builders.

Reading: `read_state_dict(path)` detects the format by content, never by suffix:
  * safetensors (`safetensors` package, numpy API; the `weights` extra),
  * torch's zip format (`torch.save` since 1.6: `ARCHIVE/data.pkl` + one file per storage) and its
    legacy format (a stream of pickles followed by the raw storages, torchvision's pre-2020 files).
A pickle is read by `_RestrictedUnpickler`, which resolves only the names a state dict needs (an
OrderedDict, torch's tensor/parameter rebuild functions, the typed storage classes) to our own numpy
stand-ins: torch is never imported and nothing in the file can run. Anything else is a `WeightsError`.

Converting: an architecture says where each tensor goes with a `TorchLayout` in its spec
(`ArchSpec.torch_layouts`): `layers(model)` maps each weighted Keras layer name of `model` to the
checkpoint keys that fill its weights, in Keras weight order:
  * Conv2D: [weight, bias?]             torch (out, in/groups, kh, kw) -> Keras (kh, kw, in/groups, out);
    a grouped Conv2D (`groups=g`) splits its output channels into g contiguous groups as torch does,
    so the same transpose holds; a 2-D (out, in) tensor fills a 1x1 conv (SE written with Linear).
  * DepthwiseConv2D: [weight, bias?]    torch (in*mult, 1, kh, kw) -> Keras (kh, kw, in, mult).
  * Dense: [weight, bias]               torch (out, in) -> Keras (in, out). When the Dense reads a
    Flatten of an (h, w, c) map (through weightless layers), its rows are permuted from torch's
    c,h,w flattening order to Keras' h,w,c; a 4-D conv kernel (timm's VGG pre-logits, a 7x7 conv)
    fills it the same way.
  * BatchNormalization: [weight, bias, running_mean, running_var].
  * any other layer: the tensors as they are.
`head` names the key prefixes of the checkpoint's classifier, which a model with a new head skips;
`optional` those of parts a model may be built without (GoogLeNet's aux heads), skipped when it is.
A spec may list several layouts (timm's and torchvision's key names); the one whose keys the checkpoint
holds most of is used (weights.load_checkpoint), and a mismatch is reported against it. To support a
family, write its `layers` function next to its builder and pass
`torch_layouts=(TorchLayout("timm", layers, head=("fc.",)),)` to its `ArchSpec`; its published files
are `Checkpoint` entries in `ArchSpec.weights` (registry.torchvision_checkpoint / timm_checkpoint).

`load_torch_state(model, state, layout)` converts and checks everything first and assigns only when
every tensor fits, naming the first mismatch otherwise (a missing tensor, an extra one, a shape).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from tltoolkit._keras_internals import inbound_nodes, producer
from tltoolkit.errors import TltoolkitError, one_line

WEIGHTS_EXTRA = 'pip install "tltoolkit[weights]"'
IGNORED_KEYS = ("num_batches_tracked",)  # BatchNorm's step counter: no Keras counterpart
WRAPPERS = ("state_dict", "model", "state_dict_ema", "model_ema")  # training checkpoints nest the state
PREFIXES = ("module.", "_orig_mod.")  # DataParallel / torch.compile wrappers

# torch's typed storages (what `torch.save` names) -> numpy dtypes; bfloat16 is widened to float32.
STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "BFloat16Storage": "<u2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of torch's pre-1.6 format


class WeightsError(TltoolkitError):
    """Weights that cannot be had or do not fit the model."""


# ---------------------------------------------------------------------------------------------- reading

def read_state_dict(path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file or a torch `.pth`, by name, as numpy arrays."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if _is_safetensors(head):
        state = _read_safetensors(path)
    elif zipfile.is_zipfile(path):
        state = _read_torch_zip(path)
    elif head[:2] == b"\x80\x02":  # pickle protocol 2: torch's legacy format starts with its magic number
        state = _read_torch_legacy(path)
    else:
        raise WeightsError(f"{path.name} is neither a safetensors file nor a torch checkpoint; "
                           f"pass a timm .safetensors, a torchvision .pth or a Keras weights file")
    return _unwrap(state, path)


def is_checkpoint(path) -> bool:
    """Whether `path` holds a safetensors file or a torch checkpoint (by content)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if _is_safetensors(head) or head[:2] == b"\x80\x02":
        return True
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist())


def _is_safetensors(head: bytes) -> bool:
    # 8-byte little-endian header length, then the JSON header.
    return len(head) >= 9 and head[8:9] == b"{" and 2 <= struct.unpack("<Q", head[:8])[0] < 1 << 30


def _read_safetensors(path: Path) -> dict:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise WeightsError(f"reading {path.name} needs the safetensors package: {WEIGHTS_EXTRA}") from None
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own errors (bf16 has no numpy dtype, damage)
        raise WeightsError(f"{path.name}: unreadable safetensors file ({one_line(error)})") from None


class _Storage:
    """A storage the pickle refers to; `array` is filled in from the checkpoint's bytes."""

    def __init__(self, dtype: str, key: str, numel: int):
        self.dtype, self.key, self.numel = np.dtype(dtype), key, numel
        self.array: np.ndarray | None = None


def _storage_class(name):
    def make(*args):  # never called by a state dict; the class is only named in persistent ids
        raise pickle.UnpicklingError(f"torch.{name} constructed directly")
    make.storage_name = name
    return make


def _rebuild_tensor(storage, offset, size, stride, *_):
    return _Tensor(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, *_):
    return data


class _Tensor:
    """A tensor view on a storage, materialised once the storages are read."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def numpy(self, name: str) -> np.ndarray:
        flat = self.storage.array
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) if all(self.size) else -1
        if self.offset < 0 or last >= flat.size:
            raise WeightsError(f"tensor {name} reaches past its storage: the checkpoint is damaged")
        count = int(np.prod(self.size))
        if self.stride == _contiguous_strides(self.size):  # what state dicts hold: a view, no copy
            array = flat[self.offset:self.offset + count].reshape(self.size)
        else:
            array = np.array(np.lib.stride_tricks.as_strided(flat[self.offset:], self.size,
                                                             [s * flat.itemsize for s in self.stride]))
        if self.storage.dtype == np.dtype("<u2"):  # bfloat16: the high half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _contiguous_strides(size: tuple) -> tuple:
    strides, step = [], 1
    for n in reversed(size):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only what a state dict names, to harmless stand-ins; refuses every other global."""

    ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        **{("torch", name): _storage_class(name) for name in STORAGE_DTYPES},
    }

    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise WeightsError(
                f"{self.path.name} refers to {module}.{name}, which a state dict never needs: refused unread "
                f"(only tensors and dicts load; convert it to safetensors where it came from)") from None

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and saved_id[:1] == ("storage",) and len(saved_id) >= 5
                and hasattr(saved_id[1], "storage_name")):
            raise WeightsError(f"{self.path.name}: unexpected persistent reference {saved_id!r:.80}: refused")
        _, storage_class, key, _location, numel = saved_id[:5]
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(STORAGE_DTYPES[storage_class.storage_name], key, int(numel))
        return self.storages[key]


def _unpickle(data: bytes, path: Path) -> tuple[object, dict[str, _Storage]]:
    unpickler = _RestrictedUnpickler(io.BytesIO(data), path)
    try:
        obj = unpickler.load()
    except WeightsError:
        raise
    except Exception as error:
        raise WeightsError(f"{path.name}: unreadable torch checkpoint ({one_line(error)})") from None
    return obj, unpickler.storages


def _read_torch_zip(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise WeightsError(f"{path.name} is a zip file but not a torch checkpoint (no data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        obj, storages = _unpickle(archive.read(pickles[0]), path)
        byteorder = archive.read(f"{prefix}byteorder").decode() if f"{prefix}byteorder" in archive.namelist() \
            else "little"
        for storage in storages.values():
            name = f"{prefix}data/{storage.key}"
            if name not in archive.namelist():
                raise WeightsError(f"{path.name} lacks the storage {name}: the checkpoint is damaged")
            dtype = storage.dtype.newbyteorder("<" if byteorder == "little" else ">")
            storage.array = np.frombuffer(archive.read(name), dtype=dtype)
    return _materialise(obj, path)


def _read_torch_legacy(path: Path) -> dict:
    """torch < 1.6: pickles (magic, protocol, system info, the object, the storage keys), then per
    storage its element count (int64) and bytes."""
    data = path.read_bytes()
    stream = io.BytesIO(data)

    def load():
        unpickler = _RestrictedUnpickler(stream, path)
        try:
            return unpickler.load(), unpickler.storages
        except WeightsError:
            raise
        except Exception as error:
            raise WeightsError(f"{path.name}: unreadable torch checkpoint ({one_line(error)})") from None

    magic, _ = load()
    if magic != LEGACY_MAGIC:
        raise WeightsError(f"{path.name} is a pickle but not a torch checkpoint: refused unread")
    load()  # protocol version
    load()  # system info (byte order, type sizes)
    obj, storages = load()
    keys, _ = load()
    for key in keys:
        storage = storages.get(str(key))
        count = struct.unpack("<q", stream.read(8))[0]
        if storage is None or count != storage.numel:
            raise WeightsError(f"{path.name}: storage {key} does not match its record: the checkpoint is damaged")
        storage.array = np.frombuffer(stream.read(count * storage.dtype.itemsize), dtype=storage.dtype)
    return _materialise(obj, path)


def _materialise(obj, path: Path):
    if isinstance(obj, _Tensor):
        return obj
    if isinstance(obj, dict):
        return {key: _materialise(value, path) for key, value in obj.items()}
    return obj


def _unwrap(state, path: Path) -> dict[str, np.ndarray]:
    """The flat name -> array dict inside a checkpoint: wrapper dicts and module prefixes removed.
    A training checkpoint's other entries (epoch, best accuracy: numbers, or 0-d tensors as torch 0.4
    saved them) are dropped with their wrapper."""
    while isinstance(state, dict):
        wrapper = next((w for w in WRAPPERS if isinstance(state.get(w), dict)), None)
        if wrapper is None or any(isinstance(v, _Tensor) and v.size for v in state.values()):
            break
        state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"{path.name} holds no state dict (name -> tensor)")
    arrays = {}
    for key, value in state.items():
        if isinstance(value, _Tensor):
            value = value.numpy(key)
        if not isinstance(value, np.ndarray):
            raise WeightsError(f"{path.name}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                               f"pass the model's state dict")
        arrays[str(key)] = value
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in arrays):
            arrays = {k[len(prefix):]: v for k, v in arrays.items()}
    return arrays


# ------------------------------------------------------------------------------------------- converting

def _flatten_source_shape(layer):
    """The (h, w, c) map a Dense reads through a Flatten (and weightless layers), or None."""
    from keras import layers

    node = inbound_nodes(layer)[0]
    while True:
        tensors = node.input_tensors
        if len(tensors) != 1:
            return None
        source = producer(tensors[0])
        if isinstance(source, layers.Flatten):
            shape = source.input.shape[1:]
            return tuple(shape) if len(shape) == 3 else None
        if source.weights or not inbound_nodes(source):
            return None
        node = inbound_nodes(source)[0]


def _convert(layer, index: int, tensor: np.ndarray, target_shape: tuple) -> np.ndarray:
    """A torch tensor in Keras' layout for weight `index` of `layer`."""
    from keras import layers

    if index == 0 and isinstance(layer, layers.DepthwiseConv2D):
        kh, kw, channels, multiplier = target_shape
        if tensor.shape != (channels * multiplier, 1, kh, kw):
            return tensor  # refused by the shape check
        return tensor.reshape(channels, multiplier, kh, kw).transpose(2, 3, 0, 1)
    if index == 0 and isinstance(layer, (layers.Conv1D, layers.Conv2D, layers.Conv3D)):
        if tensor.ndim == 2 and len(target_shape) == 4:  # a Linear as a 1x1 conv
            return tensor.T.reshape(target_shape)
        return np.moveaxis(tensor, (0, 1), (-1, -2)) if tensor.ndim >= 3 else tensor
    if index == 0 and isinstance(layer, layers.Dense):
        if tensor.ndim == 4:  # a conv over the whole map (timm's VGG pre-logits): HWIO rows are h, w, c
            return tensor.transpose(2, 3, 1, 0).reshape(-1, tensor.shape[0])
        if tensor.ndim == 2:
            grid = _flatten_source_shape(layer)
            if grid is not None and grid[0] * grid[1] > 1 and tensor.shape[1] == np.prod(grid):
                h, w, c = grid
                return tensor.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)
            return tensor.T
    return tensor


def convert_state(model, state: dict[str, np.ndarray], layout: dict[str, list[str]],
                  optional: tuple[str, ...] = ()) -> dict[str, list]:
    """Every layer's weights converted from `state` per `layout`, or a WeightsError at the first
    mismatch: a layer the layout misses, a missing tensor, a shape, an extra tensor (other than one
    under an `optional` prefix: a part the model was built without, TorchLayout.optional)."""
    values, used = {}, set()
    for layer in model.layers:
        if not layer.weights:
            continue
        keys = layout.get(layer.name)
        if keys is None:
            raise WeightsError(f"no checkpoint tensors are mapped to layer {layer.name}: the layout does not "
                               f"cover this model")
        if len(keys) != len(layer.weights):
            raise WeightsError(f"layer {layer.name} has {len(layer.weights)} weights but the layout maps "
                               f"{len(keys)} tensors ({', '.join(keys)})")
        converted = []
        for index, (key, variable) in enumerate(zip(keys, layer.weights)):
            if key not in state:
                raise WeightsError(f"the checkpoint lacks {key} (for layer {layer.name}): it was saved from "
                                   f"another architecture or variant")
            target = tuple(variable.shape)
            array = _convert(layer, index, state[key], target)
            if tuple(array.shape) != target:
                raise WeightsError(f"{key} has shape {tuple(state[key].shape)}, which does not fit {layer.name} "
                                   f"{variable.path.rsplit('/', 1)[-1]} {target}: another architecture or size")
            converted.append(array.astype(variable.dtype, copy=False))
            used.add(key)
        values[layer.name] = converted
    extra = [k for k in state if k not in used and not k.endswith(IGNORED_KEYS) and not k.startswith(optional)]
    if extra:
        raise WeightsError(f"the checkpoint has {len(extra)} tensor(s) this model does not (first: {extra[0]}): "
                           f"it was saved from another architecture or variant")
    return values


def assign(model, values: dict[str, list]) -> None:
    for layer in model.layers:
        if layer.name in values:
            layer.set_weights(values[layer.name])


def load_torch_state(model, state: dict[str, np.ndarray], layout: dict[str, list[str]]) -> None:
    """Converts `state` into `model` per `layout` (see the module docstring); all or nothing."""
    assign(model, convert_state(model, state, layout))
