"""The store: every on-disk format of a feature store and its reader, one owner each.

=====================================  ==============================================
module                                 owns
=====================================  ==============================================
:mod:`advaudio.store.files`            atomic commits, owner-named temporaries, sha256,
                                       strict JSON, I/O errors as StoreErrors, HDF5 files
                                       built in memory, the store lock (every writer)
:mod:`advaudio.store.feature_store`    :class:`Store`: feature shards
                                       (``shards/shard-NNNNN.h5``), the master file
                                       ``store.h5`` that links them, ``manifest.json``;
                                       :func:`check_same_store`
:mod:`advaudio.store.reader`           :class:`FeatureReader`, the chunk-aligned reader of
                                       ``store.h5``'s feature arrays (``Store.reader()``)
:mod:`advaudio.store.adversarial`      :class:`AdversarialShard`, the writer and reader of
                                       ``adversarial/<name>.h5`` and its checksum;
                                       :class:`ShardAttrs`, its attributes
:mod:`advaudio.store.provenance`       which adversarial shards may enter training
                                       (:func:`find_shards`, :func:`inspect_shards`)
:mod:`advaudio.store.sealed`           the integrity rule of every small file a stage trusts:
                                       a digest of its content inside it, checked on read
:mod:`advaudio.store.schema`           schema checks (types, value ranges) of JSON files
:mod:`advaudio.store.documents`        ``metrics.json``: its one writer and checked reader
:mod:`advaudio.store.results`          attack results files: :class:`AttackResults`,
                                       :class:`AttackRecord` (and the :class:`Note` and
                                       :class:`Check` they hold), their writer and reader
=====================================  ==============================================

Run directories (checkpoints, metrics, attack results) are laid out by
:mod:`advaudio.layout`.
"""

from advaudio.lazy import exports, names

# Imported on first use (advaudio.lazy): a light module of the package (a source's declaration,
# the documents' schema) does not pull in h5py.
_EXPORTS = {
    ".adversarial": ["ADVERSARIAL_DIR", "AdversarialShard", "ShardAttrs", "decode_attr", "shard_path", "shard_paths",
                     "write_adversarial_shard"],
    ".feature_store": ["FORMAT_VERSION", "LOCK_NAME", "MANIFEST_NAME", "MASTER_NAME", "SHARD_DIR", "STAMPS_NAME",
                       "Store", "StoredRepresentation", "check_manifest", "check_same_store", "link_master",
                       "read_shard_summary", "shard_name", "write_feature_shard"],
    ".files": ["TMP_SUFFIX", "atomic_write", "commit_file", "exclusive_lock", "fingerprint", "h5_create",
               "is_temporary", "jsonable", "open_h5_read", "remove_stale_tmp", "sha256_file", "tmp_owner",
               "tmp_path_for", "write_json_atomic", "write_text_atomic"],
    ".provenance": ["find_shards", "inspect_shards"],
    ".reader": ["FeatureReader", "read_rows", "sorted_unique"],
    ".results": ["AttackRecord", "AttackResults", "Check", "Evaluation", "Note", "excluded_note"],
    ".schema": ["Fields"],
    ".sealed": ["DIGEST_KEY", "read_json_strict", "read_sealed_json", "set_aside", "write_sealed_json"],
}
__getattr__, __dir__ = exports(__name__, _EXPORTS)
__all__ = names(_EXPORTS)
