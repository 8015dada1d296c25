"""Feature extraction: the frozen part of a network computed once per image and kept.

- `extractor`: the frozen part as a model (`feature_extractor`) and the `FeatureSpec` that names
  its features.
- `cache`: the on-disk feature cache keyed by that spec (`FeatureCache`, `cached_dataset`).
- `local`: extraction into the cache on this machine (`extract_features`).
- `ray`: the same computed by a Ray Data job (`extract_with_ray`, `extract_features_with_ray`).
- `parquet`: the batch job's output files (`write_output`).
- `job`: `extract_job`, what `tltoolkit extract` runs: scan -> cache (local or Ray) -> Parquet.

    extractor = feature_extractor("resnet50", weights="imagenet", layer="penultimate")
    cache, stats = extract_features(scan_result.usable(), extractor)
    dataset = cached_dataset(cache, scan_result.usable("train"))
"""
