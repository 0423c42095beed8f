"""tegula's benchmarks: `python -m benchmarks [--suite NAME ...] [--quick] [--out DIR]`.

Each suite times tegula beside its peers on the same inputs in the same process, writes
`results/<suite>.json`, and RESULTS.md is regenerated from all the JSON files present.
"""
