"""Where an agent's documents come from: the stdlib, synthetic streams, or the user's own data.

A source yields :class:`Document`\\ s (text + where it came from) split into train (one context
each) and held out (:class:`AgentDocuments`); :mod:`agents.workload` tokenizes them. Kinds
(``workload.kind``): ``stdlib`` (:mod:`.stdlib`), ``code`` (installed source code, :mod:`.code`),
``synthetic`` (:mod:`.synthetic`), ``files`` (:mod:`.files`), ``jsonl`` (:mod:`.jsonl`),
``dataset`` (:mod:`.dataset`, partitioners in :mod:`.partition`). :mod:`.kinds` answers, for any
kind: :func:`topology_of`, :func:`documents_for`, :func:`check_workload`. Importing this package loads neither torch,
transformers, datasets nor pyarrow; names load on first use.
"""

from layers.lazy import lazy_exports

_EXPORTS = {  # public name -> the module that defines it
    "AgentDocuments": "agents.sources.document",
    "Document": "agents.sources.document",
    "LazyDocuments": "agents.sources.document",
    "InterleavedDocuments": "agents.sources.document",
    "WorkloadError": "agents.sources.document",
    "check_workload": "agents.sources.kinds",
    "code_files": "agents.sources.code",
    "documents_for": "agents.sources.kinds",
    "package_files": "agents.sources.stdlib",
    "split_every": "agents.sources.document",
    "stdlib_dir": "agents.sources.stdlib",
    "stdlib_documents": "agents.sources.stdlib",
    "topology_of": "agents.sources.kinds",
    "union_documents": "agents.sources.document",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
