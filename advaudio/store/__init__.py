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

from advaudio.store.adversarial import (
                                        ADVERSARIAL_DIR,
                                        AdversarialShard,
                                        ShardAttrs,
                                        decode_attr,
                                        shard_path,
                                        shard_paths,
                                        write_adversarial_shard,
)
from advaudio.store.feature_store import (
                                        FORMAT_VERSION,
                                        LOCK_NAME,
                                        MANIFEST_NAME,
                                        MASTER_NAME,
                                        SHARD_DIR,
                                        STAMPS_NAME,
                                        Store,
                                        StoredRepresentation,
                                        check_manifest,
                                        check_same_store,
                                        link_master,
                                        read_shard_summary,
                                        shard_name,
                                        write_feature_shard,
)
from advaudio.store.files import (
                                        TMP_SUFFIX,
                                        atomic_write,
                                        commit_file,
                                        exclusive_lock,
                                        fingerprint,
                                        h5_create,
                                        is_temporary,
                                        jsonable,
                                        open_h5_read,
                                        remove_stale_tmp,
                                        sha256_file,
                                        tmp_owner,
                                        tmp_path_for,
                                        write_json_atomic,
                                        write_text_atomic,
)
from advaudio.store.provenance import find_shards, inspect_shards
from advaudio.store.reader import FeatureReader, read_rows, sorted_unique
from advaudio.store.results import AttackRecord, AttackResults, Check, Evaluation, Note, excluded_note
from advaudio.store.schema import Fields
from advaudio.store.sealed import DIGEST_KEY, read_json_strict, read_sealed_json, set_aside, write_sealed_json

__all__ = [
    "ADVERSARIAL_DIR", "AdversarialShard", "AttackRecord", "AttackResults", "Check", "DIGEST_KEY", "Evaluation", "FORMAT_VERSION", "Fields", "FeatureReader", "LOCK_NAME",
    "MANIFEST_NAME", "MASTER_NAME", "Note", "SHARD_DIR", "ShardAttrs", "STAMPS_NAME", "Store", "StoredRepresentation", "TMP_SUFFIX",
    "atomic_write", "check_manifest", "check_same_store", "commit_file", "decode_attr", "excluded_note", "exclusive_lock",
    "find_shards", "fingerprint", "h5_create", "inspect_shards", "is_temporary", "jsonable", "link_master",
    "open_h5_read", "read_json_strict", "read_rows", "read_sealed_json", "read_shard_summary", "remove_stale_tmp",
    "set_aside", "sha256_file",
    "shard_name", "shard_path", "shard_paths", "sorted_unique", "tmp_owner", "tmp_path_for",
    "write_adversarial_shard", "write_feature_shard", "write_json_atomic", "write_sealed_json", "write_text_atomic",
]
