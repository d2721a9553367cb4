"""Where a :class:`~backend_services.store.redis.RedisStore` keeps things in Redis.

Every key of one store starts with the hash tag ``{<namespace>}``, so all of them live in
one Redis Cluster slot and every Lua script may touch any of them. After the tag comes
the layout's schema version, so a later release can migrate to another layout::

    {dtesn}:schema                 "1" — the layout version this namespace was written with
    {dtesn}:v1:doc:<key>           record: "<version>:<updated_at>:<value JSON>" (a string)
    {dtesn}:v1:set:<key>           set of members
    {dtesn}:v1:ctr:<key>           counter (integer string)
    {dtesn}:v1:lease:<name>        lease owner, expiring by PX on the server's clock
    {dtesn}:v1:feed:<stream>       Redis Stream; entry ids are "<seq>-0", one field "d"
    {dtesn}:v1:feedseq:<stream>    the stream's sequence counter (INCR'd by the append script)
    {dtesn}:v1:feeddedupe:<stream> sorted set: recent dedupe ids, scored by their sequence

A record is one string so that a read is one ``GET`` (``MGET`` for many) and the scripts can
read the version with an anchored pattern match.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ValidationError

__all__ = ["SCHEMA_VERSION", "KeyLayout"]

SCHEMA_VERSION = 1
"""The version of the key layout above."""


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Key prefixes of one namespace (prefix + user key = Redis key)."""

    namespace: str
    schema: str
    doc: str
    set: str
    counter: str
    lease: str
    feed: str
    feed_seq: str
    feed_dedupe: str

    @classmethod
    def for_namespace(cls, namespace: str, version: int = SCHEMA_VERSION) -> KeyLayout:
        """The layout of ``namespace`` (a non-empty string without braces)."""
        if (
            type(namespace) is not str
            or not namespace
            or "{" in namespace
            or "}" in namespace
            or any(c.isspace() for c in namespace)
        ):
            raise ValidationError(
                "namespace", namespace, "a non-empty string without braces or whitespace"
            )
        base = f"{{{namespace}}}:v{version}:"
        return cls(
            namespace=namespace,
            schema=f"{{{namespace}}}:schema",
            doc=base + "doc:",
            set=base + "set:",
            counter=base + "ctr:",
            lease=base + "lease:",
            feed=base + "feed:",
            feed_seq=base + "feedseq:",
            feed_dedupe=base + "feeddedupe:",
        )

    @property
    def pattern(self) -> str:
        """An ACL key pattern covering every key of this namespace (``~{dtesn}:*``)."""
        return f"~{{{self.namespace}}}:*"
