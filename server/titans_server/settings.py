"""Server settings: flags, ``TITANS_*`` environment variables, or keyword arguments (tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of ``titans-server``; ``--port 9000`` and ``TITANS_PORT=9000`` mean the same."""

    model_config = SettingsConfigDict(
        env_prefix="TITANS_", cli_kebab_case=True, cli_prog_name="titans-server"
    )

    host: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0 for every one)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    model: str = Field("default", description="'default' (shipped), 'tiny-random' or a checkpoint directory")
    data_dir: Path = Field(
        Path("./data"),
        description="where the embedded Redis keeps its files (relative: to the working directory)",
    )
    redis_url: str | None = Field(
        None,
        description="redis:// or rediss:// URL of an external Redis (with --redis-cluster: any node of "
        "the cluster); unset: start an embedded one",
    )
    redis_cluster: bool = Field(False, description="the Redis at --redis-url is a Redis Cluster")
    redis_wait_replicas: int = Field(
        0,
        ge=0,
        description="acknowledge a commit only once this many replicas hold it (WAIT; else 503 "
        "commit_uncertain)",
    )
    redis_wait_timeout: float = Field(
        1.0,
        gt=0,
        lt=5,
        description="seconds a commit waits for --redis-wait-replicas replicas (under the clients' 5 s "
        "socket timeout)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the model runs")
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for the model (unset: one per core this process may use)",
    )
    max_batch_size: int = Field(
        8,
        ge=1,
        description="sessions per decode step (larger batches cost more in copies than they save, today)",
    )
    max_queue: int = Field(256, ge=1, description="requests waiting or running before new ones get 429")
    prefill_piece_tokens: int = Field(
        2048, ge=1, description="prompt and document tokens per model step (long inputs go in pieces)"
    )
    max_new_tokens: int = Field(512, ge=1, description="default and ceiling of a reply's length")
    max_prompt_tokens: int = Field(32768, ge=1, description="tokens a chat or completion request may add")
    max_ingest_tokens: int = Field(8_000_000, ge=1, description="tokens one document may have")
    session_list_limit: int = Field(100, ge=1, description="largest page of GET /v1/sessions")
    max_request_bytes: int = Field(4 << 20, ge=1024, description="largest JSON request body (bytes)")
    max_ingest_bytes: int = Field(
        64 << 20, ge=1024, description="largest document upload or imported state (bytes)"
    )
    max_header_bytes: int = Field(
        16384, ge=1024, description="largest request head: request line and headers (bytes; else 400)"
    )
    header_timeout: float = Field(
        10.0, gt=0, description="seconds a connection may take to send a request's headers (else closed)"
    )
    keep_alive_timeout: float = Field(
        5.0, gt=0, description="seconds an idle connection stays open after a response"
    )
    max_sessions_per_tenant: int = Field(100_000, ge=1, description="sessions one API key's tenant may hold")
    max_metadata_keys: int = Field(16, ge=0, description="keys of a session's metadata (else 400)")
    max_metadata_bytes: int = Field(
        8192, ge=0, description="UTF-8 bytes of a session's metadata, keys and values (else 400)"
    )
    max_messages: int = Field(2048, ge=1, description="messages of a chat request (else 400)")
    max_prompt_bytes: int = Field(
        262144, ge=1, description="UTF-8 bytes of the text a chat or completion adds (else 400)"
    )
    max_json_values: int = Field(
        20000, ge=100, description="values (strings, numbers, keys, objects, arrays) of a JSON body"
    )
    cpu_workers: int = Field(1, ge=1, description="processes that tokenise and check JSON bodies")
    max_cpu_jobs_per_tenant: int = Field(
        128, ge=1, description="requests of one tenant being tokenised or checked at once (else 429)"
    )
    max_waiting_per_session: int = Field(
        32, ge=1, description="requests waiting for or holding one session (else 429)"
    )
    tenant_queue_share: float = Field(
        0.5, gt=0, le=1, description="share of --max-queue one tenant's requests may take (else 429)"
    )
    min_body_rate: int = Field(
        1024, ge=0, description="bytes per second a request body must average over --body-rate-window"
    )
    body_rate_window: float = Field(
        10.0, gt=0, description="seconds over which a body's rate is measured (a slower one is cut off)"
    )
    max_connections: int = Field(
        1000, ge=1, description="open connections (lowered to fit the open-file limit); more are closed"
    )
    allowed_hosts: list[str] | None = Field(
        None,
        description="Host header values served ('*': any); unset: loopback names on a loopback --host, "
        "else any",
    )
    cors_origins: list[str] = Field(
        [], description="browser origins that may call the API (CORS); none: same-origin pages only"
    )
    shutdown_timeout: float = Field(
        30.0, ge=0, description="seconds SIGTERM waits for requests in flight before cancelling them"
    )
    request_timeout: float = Field(
        3600.0, ge=0, description="seconds a request may run on the model before it is cancelled (0: none)"
    )
    api_keys_file: Path | None = Field(
        None, description="lines 'TENANT SHA256HEX' (see `titans keys add`); re-read when it changes"
    )
    api_key: SecretStr | None = Field(
        None, description="one key for simple setups (tenant 'default'); at least 16 characters"
    )
    metrics_auth: bool = Field(False, description="ask for an API key on /metrics too")
    history_versions: int = Field(
        4,
        ge=0,
        le=64,
        description="earlier versions each session keeps to restore (a session's own history_versions "
        "overrides it; 0: none)",
    )
    history_max_bytes: int = Field(
        64 << 20, ge=0, description="bytes of kept versions per session (the oldest go first)"
    )
    max_tenant_bytes: int = Field(
        16 << 30,
        ge=0,
        description="bytes of states and kept versions one API key's tenant may hold (kept versions go "
        "first, a state past it is 429; 0: no bound)",
    )

    @model_validator(mode="after")
    def _replicas_need_a_url(self) -> Settings:
        """The embedded Redis is one node without replicas: a cluster or replicas must be named."""
        if self.redis_url is None and self.redis_cluster:
            raise ValueError("--redis-cluster needs --redis-url naming a node of the cluster")
        if self.redis_url is None and self.redis_wait_replicas:
            raise ValueError("--redis-wait-replicas needs --redis-url: the embedded Redis has no replicas")
        return self

    @field_validator("api_key")
    @classmethod
    def _long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        """An empty key (``TITANS_API_KEY=``) must not quietly leave the server open."""
        if key is not None and len(key.get_secret_value()) < 16:
            raise ValueError("an API key needs at least 16 characters (`titans keys add` makes good ones)")
        return key
