"""The names of the files in a level's (or branch's) folder and in an experiment's folder:
spelled here only, for every reader and writer of the store (see :mod:`lottery.store.results`
for the layout). Imports nothing, so that readers such as :mod:`lottery.analysis` stay light."""

# In a level or branch folder.
SUMMARY_FILE = "summary.json"  # written last: a level is finished when it parses
MASK_FILE = "mask.npz"  # the bool mask, written first
# Final weights ("params/...") and statistics ("batch_stats/...").
PARAMS_FILE = "params.npz"
# The same weights in the sparse format of lottery.deploy.sparse_format.
SPARSE_PARAMS_FILE = "params_sparse.npz"
METRICS_FILE = "metrics.jsonl"  # one JSON object per evaluation
# In an experiment's (or dense) folder.
CONFIG_FILE = "config.yaml"  # the resolved config of the first run
HASHED_FILE = "hashed.json"  # the values its hash was made from
CURVE_FILE = "curve.csv"  # one row per replicate, level and branch
