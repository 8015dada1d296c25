"""`tltoolkit export`: a trained model for serving, taking raw uint8 images of any size and returning
probabilities, with labels.txt beside it (inside the folder for savedmodel).

Formats: keras (.keras, loads in safe mode), savedmodel (folder, `serve` signature), tflite (.tflite;
--quantize float16, dynamic or int8, calibrated on the run's training images at several sizes) and onnx
(.onnx; needs pip install 'tltoolkit[onnx]'). The export is loaded back and compared with the Keras model
on a few images at several sizes (the model's, half, 2x, 4x and a non-square one); it fails naming the
size where it differs most. The exported model returns the rejection score next to the probabilities
(the model's score kind at its temperature; reject below the threshold the summary prints). --tta flip
or ten-crop averages those views inside the graph, as `evaluate --tta` does.
"""

from __future__ import annotations

from tltoolkit.inference.tta import TTA_MODES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("export", help="export a model for serving", description=__doc__)
    parser.add_argument("--model", required=True, metavar="RUN_DIR|MODEL.keras", help="a run directory or .keras file")
    parser.add_argument("--format", required=True, choices=["keras", "savedmodel", "tflite", "onnx"])
    parser.add_argument("--quantize", choices=["float16", "int8", "dynamic"], help="tflite only")
    parser.add_argument("--out", required=True, help="the file (.keras, .tflite, .onnx) or folder (savedmodel)")
    parser.add_argument("--data", help="images for int8 calibration and verification when the run has no snapshot")
    parser.add_argument("--tta", choices=TTA_MODES, default="none",
                        help="test-time augmentation views averaged inside the exported model (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.set_defaults(run=run)


def run(args) -> int:
    from tltoolkit.export import export

    result = export(args.model, args.format, args.out, quantize=args.quantize, force=args.force, data=args.data,
                    tta=args.tta)
    print(result.summary())
    return 0
