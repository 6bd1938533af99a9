"""The model catalog: which model files exist, where, and what is inside them.

Named ``catalog`` rather than ``models`` because :mod:`edgelab.models` is the
results database. Runs name a model by its catalog name; the engines look up the
path here and record the sha256 as provenance.
"""

from edgelab.catalog.catalog import Catalog, describe_gguf
from edgelab.catalog.fetch import DOWNLOADABLE, Downloadable
from edgelab.catalog.header import GGUFHeader, read_gguf
from edgelab.catalog.info import CatalogError, ModelInfo, Progress, sha256_file

__all__ = [
    "DOWNLOADABLE",
    "Catalog",
    "CatalogError",
    "Downloadable",
    "GGUFHeader",
    "ModelInfo",
    "Progress",
    "describe_gguf",
    "read_gguf",
    "sha256_file",
]
