"""Datasets in BEIR layout: read, validate, write, sample a working set, convert Cranfield and MEDLINE,
load hub data.

    resume data validate data/cranfield
    resume data stats data/cranfield --tokenizer all-minilm-l6-v2
    resume data convert-cranfield data/cranfield-raw data/cranfield --seed 13
    resume data convert-medline --raw data/medline-raw --out data/medline
    resume data download BeIR/scifact data/scifact --split test      # or a `save_to_disk` directory

One module per job; every name other code uses is imported here, so `from resume.data import ...` works:

    beir         the BEIR layout: records, streaming readers, `BeirDataset`, the atomic writer
    load         `load_beir`: a folder or `hf:<name>` read and cross-checked
    working_set  `select_working_set`: the seeded part of a dataset a run uses
    validate     `validate_dataset`: errors, counts and warnings of a folder
    stats        `dataset_stats` and the token-length helpers
    convert      the SMART parser and the Cranfield and MEDLINE converters
    hub          `load_hf_dataset` (hub or `save_to_disk` folder) and `resolve_data_path`

Every malformed input raises `DataError(path, line, what was expected)`; the CLI prints it as one line
and exits 2.
"""

from __future__ import annotations

from resume.data.beir import (
    CORPUS_FILE,
    QRELS_DIR,
    QRELS_HEADER,
    QUERIES_FILE,
    BeirDataset,
    doc_text,
    read_corpus,
    read_qrels,
    read_queries,
    write_beir,
)
from resume.data.convert import (
    CRANFIELD_SPLIT,
    MEDLINE_FILES,
    MEDLINE_SPLIT,
    convert_cranfield,
    convert_medline,
)
from resume.data.hub import load_hf_dataset, resolve_data_path
from resume.data.load import load_beir
from resume.data.stats import dataset_stats
from resume.data.validate import validate_dataset
from resume.data.working_set import select_working_set

__all__ = [
    "CORPUS_FILE", "QUERIES_FILE", "QRELS_DIR", "QRELS_HEADER", "CRANFIELD_SPLIT", "MEDLINE_FILES", "MEDLINE_SPLIT",
    "BeirDataset", "doc_text", "read_corpus", "read_queries", "read_qrels", "write_beir", "load_beir",
    "select_working_set", "validate_dataset", "dataset_stats", "convert_cranfield", "convert_medline",
    "load_hf_dataset", "resolve_data_path",
]
