from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LearnMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEARN_ROUND_ROBIN: _ClassVar[LearnMode]
    LEARN_EVERY_MEMBER: _ClassVar[LearnMode]
LEARN_ROUND_ROBIN: LearnMode
LEARN_EVERY_MEMBER: LearnMode

class Level(_message.Message):
    __slots__ = ("name", "slot", "version", "parent", "modules", "parameters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    MODULES_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    slot: str
    version: int
    parent: str
    modules: int
    parameters: int
    def __init__(self, name: _Optional[str] = ..., slot: _Optional[str] = ..., version: _Optional[int] = ..., parent: _Optional[str] = ..., modules: _Optional[int] = ..., parameters: _Optional[int] = ...) -> None: ...

class ListLevelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListLevelsResponse(_message.Message):
    __slots__ = ("levels",)
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    levels: _containers.RepeatedCompositeFieldContainer[Level]
    def __init__(self, levels: _Optional[_Iterable[_Union[Level, _Mapping]]] = ...) -> None: ...

class GetLevelRequest(_message.Message):
    __slots__ = ("name", "since_version", "chunk_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SINCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    since_version: int
    chunk_bytes: int
    def __init__(self, name: _Optional[str] = ..., since_version: _Optional[int] = ..., chunk_bytes: _Optional[int] = ...) -> None: ...

class TensorChunk(_message.Message):
    __slots__ = ("version", "changed", "index", "count", "payload")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    version: int
    changed: bool
    index: int
    count: int
    payload: bytes
    def __init__(self, version: _Optional[int] = ..., changed: _Optional[bool] = ..., index: _Optional[int] = ..., count: _Optional[int] = ..., payload: _Optional[bytes] = ...) -> None: ...

class ExportAdapterRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("path", "offset", "data", "last")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    path: str
    offset: int
    data: bytes
    last: bool
    def __init__(self, path: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class ListCircuitsRequest(_message.Message):
    __slots__ = ("level", "module", "limit", "snippets")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SNIPPETS_FIELD_NUMBER: _ClassVar[int]
    level: str
    module: str
    limit: int
    snippets: int
    def __init__(self, level: _Optional[str] = ..., module: _Optional[str] = ..., limit: _Optional[int] = ..., snippets: _Optional[int] = ...) -> None: ...

class Circuit(_message.Message):
    __slots__ = ("id", "level", "module", "strength", "score", "age", "payload", "snippets")
    ID_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    AGE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SNIPPETS_FIELD_NUMBER: _ClassVar[int]
    id: str
    level: str
    module: str
    strength: float
    score: float
    age: int
    payload: bytes
    snippets: _containers.RepeatedCompositeFieldContainer[Snippet]
    def __init__(self, id: _Optional[str] = ..., level: _Optional[str] = ..., module: _Optional[str] = ..., strength: _Optional[float] = ..., score: _Optional[float] = ..., age: _Optional[int] = ..., payload: _Optional[bytes] = ..., snippets: _Optional[_Iterable[_Union[Snippet, _Mapping]]] = ...) -> None: ...

class Snippet(_message.Message):
    __slots__ = ("before", "focus", "after", "activation", "agent")
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    FOCUS_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    before: bytes
    focus: bytes
    after: bytes
    activation: float
    agent: str
    def __init__(self, before: _Optional[bytes] = ..., focus: _Optional[bytes] = ..., after: _Optional[bytes] = ..., activation: _Optional[float] = ..., agent: _Optional[str] = ...) -> None: ...

class ListCircuitsResponse(_message.Message):
    __slots__ = ("circuits",)
    CIRCUITS_FIELD_NUMBER: _ClassVar[int]
    circuits: _containers.RepeatedCompositeFieldContainer[Circuit]
    def __init__(self, circuits: _Optional[_Iterable[_Union[Circuit, _Mapping]]] = ...) -> None: ...

class GetCircuitRequest(_message.Message):
    __slots__ = ("id", "snippets")
    ID_FIELD_NUMBER: _ClassVar[int]
    SNIPPETS_FIELD_NUMBER: _ClassVar[int]
    id: str
    snippets: int
    def __init__(self, id: _Optional[str] = ..., snippets: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "levels", "max_new_tokens", "temperature", "seed", "agent")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    levels: _containers.RepeatedScalarFieldContainer[str]
    max_new_tokens: int
    temperature: float
    seed: int
    agent: str
    def __init__(self, prompt: _Optional[str] = ..., levels: _Optional[_Iterable[str]] = ..., max_new_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., seed: _Optional[int] = ..., agent: _Optional[str] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("text", "versions", "cached", "agent", "basis", "raw")
    class VersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    text: str
    versions: _containers.ScalarMap[str, int]
    cached: bool
    agent: str
    basis: str
    raw: bytes
    def __init__(self, text: _Optional[str] = ..., versions: _Optional[_Mapping[str, int]] = ..., cached: _Optional[bool] = ..., agent: _Optional[str] = ..., basis: _Optional[str] = ..., raw: _Optional[bytes] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("text", "levels", "agent")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    text: str
    levels: _containers.RepeatedScalarFieldContainer[str]
    agent: str
    def __init__(self, text: _Optional[str] = ..., levels: _Optional[_Iterable[str]] = ..., agent: _Optional[str] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("bits_per_byte", "contributions", "bytes", "versions", "basis")
    class ContributionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class VersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    BITS_PER_BYTE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    bits_per_byte: float
    contributions: _containers.ScalarMap[str, float]
    bytes: int
    versions: _containers.ScalarMap[str, int]
    basis: str
    def __init__(self, bits_per_byte: _Optional[float] = ..., contributions: _Optional[_Mapping[str, float]] = ..., bytes: _Optional[int] = ..., versions: _Optional[_Mapping[str, int]] = ..., basis: _Optional[str] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LevelStats(_message.Message):
    __slots__ = ("name", "version", "merges", "accepted", "rejected", "promotions", "forwarded", "screened_fraction", "pending", "rank", "crystallised_fraction", "growths")
    class RejectedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MERGES_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    PROMOTIONS_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_FIELD_NUMBER: _ClassVar[int]
    SCREENED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    CRYSTALLISED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    GROWTHS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    merges: int
    accepted: int
    rejected: _containers.ScalarMap[str, int]
    promotions: int
    forwarded: int
    screened_fraction: float
    pending: int
    rank: int
    crystallised_fraction: float
    growths: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., merges: _Optional[int] = ..., accepted: _Optional[int] = ..., rejected: _Optional[_Mapping[str, int]] = ..., promotions: _Optional[int] = ..., forwarded: _Optional[int] = ..., screened_fraction: _Optional[float] = ..., pending: _Optional[int] = ..., rank: _Optional[int] = ..., crystallised_fraction: _Optional[float] = ..., growths: _Optional[int] = ...) -> None: ...

class AgentCacheStats(_message.Message):
    __slots__ = ("agent", "entries", "lookups", "hits", "hit_rate", "internalised", "failed", "evicted", "confirmed")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    INTERNALISED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    agent: str
    entries: int
    lookups: int
    hits: int
    hit_rate: float
    internalised: int
    failed: int
    evicted: int
    confirmed: int
    def __init__(self, agent: _Optional[str] = ..., entries: _Optional[int] = ..., lookups: _Optional[int] = ..., hits: _Optional[int] = ..., hit_rate: _Optional[float] = ..., internalised: _Optional[int] = ..., failed: _Optional[int] = ..., evicted: _Optional[int] = ..., confirmed: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("levels", "namespace", "agents", "inboxes")
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    INBOXES_FIELD_NUMBER: _ClassVar[int]
    levels: _containers.RepeatedCompositeFieldContainer[LevelStats]
    namespace: str
    agents: _containers.RepeatedCompositeFieldContainer[AgentCacheStats]
    inboxes: _containers.RepeatedCompositeFieldContainer[AgentInbox]
    def __init__(self, levels: _Optional[_Iterable[_Union[LevelStats, _Mapping]]] = ..., namespace: _Optional[str] = ..., agents: _Optional[_Iterable[_Union[AgentCacheStats, _Mapping]]] = ..., inboxes: _Optional[_Iterable[_Union[AgentInbox, _Mapping]]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("levels",)
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    levels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, levels: _Optional[_Iterable[str]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("level", "seq", "kind", "version", "detail", "time", "agent")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    level: str
    seq: int
    kind: str
    version: int
    detail: str
    time: float
    agent: str
    def __init__(self, level: _Optional[str] = ..., seq: _Optional[int] = ..., kind: _Optional[str] = ..., version: _Optional[int] = ..., detail: _Optional[str] = ..., time: _Optional[float] = ..., agent: _Optional[str] = ...) -> None: ...

class LearnRequest(_message.Message):
    __slots__ = ("agent", "team", "mode", "text", "source")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    agent: str
    team: str
    mode: LearnMode
    text: str
    source: str
    def __init__(self, agent: _Optional[str] = ..., team: _Optional[str] = ..., mode: _Optional[_Union[LearnMode, str]] = ..., text: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class LearnReceipt(_message.Message):
    __slots__ = ("agent", "seqs", "bytes", "depth_bytes", "depth_docs")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SEQS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    DEPTH_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEPTH_DOCS_FIELD_NUMBER: _ClassVar[int]
    agent: str
    seqs: _containers.RepeatedScalarFieldContainer[int]
    bytes: int
    depth_bytes: int
    depth_docs: int
    def __init__(self, agent: _Optional[str] = ..., seqs: _Optional[_Iterable[int]] = ..., bytes: _Optional[int] = ..., depth_bytes: _Optional[int] = ..., depth_docs: _Optional[int] = ...) -> None: ...

class LearnResponse(_message.Message):
    __slots__ = ("receipts", "documents", "bytes")
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    receipts: _containers.RepeatedCompositeFieldContainer[LearnReceipt]
    documents: int
    bytes: int
    def __init__(self, receipts: _Optional[_Iterable[_Union[LearnReceipt, _Mapping]]] = ..., documents: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class AgentInbox(_message.Message):
    __slots__ = ("agent", "depth_bytes", "depth_docs", "cursor", "learned_docs", "learned_bytes")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    DEPTH_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEPTH_DOCS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LEARNED_DOCS_FIELD_NUMBER: _ClassVar[int]
    LEARNED_BYTES_FIELD_NUMBER: _ClassVar[int]
    agent: str
    depth_bytes: int
    depth_docs: int
    cursor: int
    learned_docs: int
    learned_bytes: int
    def __init__(self, agent: _Optional[str] = ..., depth_bytes: _Optional[int] = ..., depth_docs: _Optional[int] = ..., cursor: _Optional[int] = ..., learned_docs: _Optional[int] = ..., learned_bytes: _Optional[int] = ...) -> None: ...

class AddAgentRequest(_message.Message):
    __slots__ = ("name", "team", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    team: str
    data: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., team: _Optional[str] = ..., data: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveAgentRequest(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: str
    def __init__(self, agent: _Optional[str] = ...) -> None: ...

class MembershipResponse(_message.Message):
    __slots__ = ("agent", "team", "op", "children", "version", "time", "detail")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    agent: str
    team: str
    op: str
    children: int
    version: int
    time: float
    detail: str
    def __init__(self, agent: _Optional[str] = ..., team: _Optional[str] = ..., op: _Optional[str] = ..., children: _Optional[int] = ..., version: _Optional[int] = ..., time: _Optional[float] = ..., detail: _Optional[str] = ...) -> None: ...
