"""Spend from Cost Explorer, as a pandas frame with FOCUS column names.

Cost Explorer answers at most two GroupBy keys per request and charges $0.01 per request (every page
counts), so the queries are chosen to cover every figure of the report with as few requests as
possible. Each query is a *view*; one frame row is one day x one group of one view, and `x_CostView`
names the view. Every view but the untagged one sums to the whole account's spend, so sum within
one view, never across views:

- `tags:<a>+<b>`: the tag keys in pairs — `team` with `environment` first (spend by team, by
  environment and the team x environment matrix), then the other mandatory keys two by two. Each
  key's `key$` bucket (empty value) is the spend missing that tag.
- `service+region`: SERVICE x REGION, for spend by service, by region and the total.
- `account+service`: LINKED_ACCOUNT x SERVICE, for spend by account (one more request than without
  it); the account names come from the response's `DimensionValueAttributes`, the id when absent.
- `purchase+instance`: PURCHASE_TYPE x INSTANCE_TYPE with UsageQuantity: spot share (PricingCategory)
  and spot savings, i.e. spot instance-hours priced on demand (`mlp.pricing`) minus what they cost.
- `untagged:service+region`: SERVICE x REGION filtered to spend missing *any* mandatory tag (the
  per-key `key$` buckets overlap, so their union needs its own query); joined with the untagged
  resources by service in the report.

Cache rule: Cost Explorer may restate a day until its month's bill is final, which happens some days
into the next month. So a day is cached on disk (per view) only when it is *final*: older than the
first day of the previous billing month (relative to today, UTC), not `Estimated`, and older than
the first estimated day. Final days are served from the cache for good; the finished days of the
current and previous month are asked again on every run, so a restatement reaches the next report.

Request budget: every GetCostAndUsage call counts (every page, and every retried attempt, since the
budget must bound what can be billed), at `REQUEST_PRICE_USD` each. When the budget is reached, or
Cost Explorer repeats a page token it already gave for the same request (it would page for ever),
that view stops; the views still readable within the budget (from the cache, or with the requests
left) are read, and the total never exceeds the budget. A view that stops, or still fails after
retries, is left out of the frame and named in `Spend.missing` with why and what it spent: the
report says what is missing instead of showing zeros. Nothing of a view is cached unless all of it
was read.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import botocore.exceptions
import pandas as pd

import mlp.aws
from mlp import progress
from mlp.errors import UserError
from mlp.tags import DEFAULT_MANDATORY_TAGS, ENVIRONMENT, TEAM

if TYPE_CHECKING:
    # finops.focus imports this module: the type is named for readers and checkers only.
    from finops.focus import LineItems

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "ml-platform" / "cost-explorer"
CACHE_DIR_ENV = "MLP_COST_CACHE_DIR"
# What Cost Explorer charges for each request (every page counts).
REQUEST_PRICE_USD = 0.01
# $2 a run at most: a month of nightly reports stays under $60 even if Cost Explorer misbehaves.
DEFAULT_MAX_REQUESTS = 200
MAX_REQUESTS_OPTION = "--max-ce-requests"
# How the `key$` bucket (spend without the tag) is labelled in breakdowns.
UNTAGGED_LABEL = "(untagged)"
# Cost Explorer's INSTANCE_TYPE value for spend that is not an instance (storage, requests, ...).
NO_INSTANCE_TYPE = "NoInstanceType"
COST_METRICS: tuple[str, ...] = ("UnblendedCost", "AmortizedCost")
USAGE_METRIC = "UsageQuantity"
# The report always breaks spend down by these two, whatever the stack's mandatory list says.
REPORT_TAGS: tuple[str, ...] = (TEAM, ENVIRONMENT)
MAX_GROUP_BY = 2
TAG_COLUMN_PREFIX = "x_Tag_"

SERVICE_REGION_VIEW = "service+region"
ACCOUNT_VIEW = "account+service"
PURCHASE_VIEW = "purchase+instance"
UNTAGGED_VIEW = "untagged:service+region"

# Cost Explorer's throttle and the server-side errors worth asking again for.
RETRYABLE_ERROR_CODES = frozenset(
    {
        "LimitExceededException",
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
    }
)
RETRYABLE_TRANSPORT_ERRORS = (
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ReadTimeoutError,
)

FOCUS_COLUMNS: tuple[str, ...] = (
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "BilledCost",
    "EffectiveCost",
    "BillingCurrency",
    "ConsumedQuantity",
    "ServiceName",
    "RegionId",
    "PricingCategory",
    "Tags",
    "x_CostView",
    "x_Estimated",
    "x_PurchaseType",
    "x_InstanceType",
    "SubAccountId",
    "SubAccountName",
)

DIMENSION_COLUMNS = {
    "SERVICE": "ServiceName",
    "REGION": "RegionId",
    "PURCHASE_TYPE": "x_PurchaseType",
    "INSTANCE_TYPE": "x_InstanceType",
    "LINKED_ACCOUNT": "SubAccountId",
}
# Where `_fetch_range` keeps a group's value descriptions (Cost Explorer gives them per response, not
# per group); on the group, so cached days keep them too.
DESCRIPTIONS_KEY = "x_Descriptions"


@dataclass(frozen=True)
class CostView:
    """One Cost Explorer query and the report parts that depend on it."""

    name: str
    group_by: tuple[tuple[str, str], ...]  # (TAG|DIMENSION, key), at most two
    parts: tuple[str, ...]
    metrics: tuple[str, ...] = COST_METRICS
    filter: dict[str, Any] | None = None

    def request(self) -> dict[str, Any]:
        request: dict[str, Any] = {
            "Granularity": "DAILY",
            "Metrics": list(self.metrics),
            "GroupBy": [{"Type": kind, "Key": key} for kind, key in self.group_by],
        }
        if self.filter is not None:
            request["Filter"] = self.filter
        return request

    @property
    def cache_key(self) -> str:
        digest = hashlib.sha256(json.dumps(self.request(), sort_keys=True).encode()).hexdigest()[:12]
        slug = "".join(ch if ch.isalnum() or ch in "+-_" else "_" for ch in self.name)
        return f"{slug}-{digest}"

    @property
    def tag_keys(self) -> tuple[str, ...]:
        return tuple(key for kind, key in self.group_by if kind == "TAG")


@dataclass(frozen=True)
class MissingPart:
    part: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"part": self.part, "reason": self.reason}


@dataclass
class Spend:
    """Daily spend of [start, end) (end exclusive, like Cost Explorer) in FOCUS columns."""

    start: date
    end: date
    mandatory_tags: tuple[str, ...]
    frame: pd.DataFrame
    requests: int = 0
    retries: int = 0
    cached_view_days: int = 0
    missing: list[MissingPart] = field(default_factory=list)
    # Views read in full; a view absent here is absent from the frame, never partly present.
    complete_views: set[str] = field(default_factory=set)
    max_requests: int = DEFAULT_MAX_REQUESTS
    # Which cost source answered: "cost-explorer", or "focus" (the account's FOCUS export).
    source: str = "cost-explorer"
    # The FOCUS export's own line items of [start, end) (its columns, tags normalised), when the source
    # has line items; Cost Explorer has none, and the FOCUS file is derived from one of its views.
    # Whoever reads the spend closes them (they may hold a scratch directory of Parquet files).
    line_items: LineItems | None = None

    @property
    def tag_keys(self) -> tuple[str, ...]:
        return report_tag_keys(self.mandatory_tags)

    @property
    def cost_usd(self) -> float:
        """What the requests of this read cost at most (a throttled attempt may not be billed)."""
        return request_cost_usd(self.requests)


def request_cost_usd(requests: int) -> float:
    return round(requests * REQUEST_PRICE_USD, 2)


def spent(requests: int) -> str:
    """`3 requests ($0.03)`: how the messages state what Cost Explorer was paid."""
    return f"{requests} request{'' if requests == 1 else 's'} (${request_cost_usd(requests):,.2f})"


def validate_max_requests(max_requests: int) -> int:
    """The request budget as the user gave it; a budget of nothing would read nothing."""
    if max_requests < 1:
        raise UserError(
            f"{MAX_REQUESTS_OPTION} {max_requests}: use a positive number of Cost Explorer requests "
            f"(${REQUEST_PRICE_USD:.2f} each; default {DEFAULT_MAX_REQUESTS})"
        )
    return max_requests


def first_unsettled_day(today: date) -> date:
    """The first day Cost Explorer may still restate: the first of the previous month.

    The previous month's bill is final only some days into this month, so both months stay open.
    """
    previous_month_end = today.replace(day=1) - timedelta(days=1)
    return previous_month_end.replace(day=1)


def report_tag_keys(mandatory_tags: Iterable[str] = DEFAULT_MANDATORY_TAGS) -> tuple[str, ...]:
    """`team` and `environment` first, then the other mandatory keys in their order."""
    keys = list(REPORT_TAGS)
    keys += [key for key in mandatory_tags if key not in keys]
    return tuple(keys)


def tag_column(key: str) -> str:
    return f"{TAG_COLUMN_PREFIX}{key}"


def untagged_filter(tag_keys: Sequence[str]) -> dict[str, Any]:
    """Spend missing at least one of the keys (Cost Explorer's `Or` wants two operands or more)."""
    absent = [{"Tags": {"Key": key, "MatchOptions": ["ABSENT"]}} for key in tag_keys]
    return absent[0] if len(absent) == 1 else {"Or": absent}


def plan_views(mandatory_tags: Sequence[str] = DEFAULT_MANDATORY_TAGS) -> list[CostView]:
    """The queries that together cover every spend figure of the report (see the module docstring)."""
    tag_keys = report_tag_keys(mandatory_tags)
    views = []
    for index in range(0, len(tag_keys), MAX_GROUP_BY):
        pair = tuple(tag_keys[index : index + MAX_GROUP_BY])
        views.append(
            CostView(
                name="tags:" + "+".join(pair),
                group_by=tuple(("TAG", key) for key in pair),
                parts=tuple(f"spend by {key}" for key in pair),
            )
        )
    views.append(
        CostView(
            name=SERVICE_REGION_VIEW,
            group_by=(("DIMENSION", "SERVICE"), ("DIMENSION", "REGION")),
            parts=("spend by service", "spend by region"),
        )
    )
    views.append(
        CostView(
            name=ACCOUNT_VIEW,
            group_by=(("DIMENSION", "LINKED_ACCOUNT"), ("DIMENSION", "SERVICE")),
            parts=("spend by account",),
        )
    )
    views.append(
        CostView(
            name=PURCHASE_VIEW,
            group_by=(("DIMENSION", "PURCHASE_TYPE"), ("DIMENSION", "INSTANCE_TYPE")),
            parts=("spot share and spot savings",),
            metrics=(*COST_METRICS, USAGE_METRIC),
        )
    )
    if mandatory_tags:  # with no mandatory tag, nothing can be untagged
        views.append(
            CostView(
                name=UNTAGGED_VIEW,
                group_by=(("DIMENSION", "SERVICE"), ("DIMENSION", "REGION")),
                parts=("untagged spend",),
                filter=untagged_filter(mandatory_tags),
            )
        )
    return views


def pricing_category(purchase_type: str) -> str:
    """FOCUS PricingCategory of a Cost Explorer PURCHASE_TYPE value."""
    lowered = purchase_type.lower()
    if "spot" in lowered:
        return "Dynamic"
    if "reserved" in lowered or "savings plan" in lowered:
        return "Committed"
    if "on demand" in lowered or "on-demand" in lowered:
        return "Standard"
    return "Other"


def days_between(start: date, end: date) -> list[date]:
    return [start + timedelta(days=offset) for offset in range((end - start).days)]


def contiguous_ranges(days: Sequence[date]) -> list[tuple[date, date]]:
    """Sorted days as [start, end) ranges, one per run of consecutive days."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(days):
        if ranges and ranges[-1][1] == day:
            ranges[-1] = (ranges[-1][0], day + timedelta(days=1))
        else:
            ranges.append((day, day + timedelta(days=1)))
    return ranges


@dataclass
class DayResult:
    groups: list[dict[str, Any]]
    estimated: bool


class SpendCache:
    """Final days of each view as one JSON file per day, under a per-account namespace."""

    def __init__(self, directory: Path, namespace: str) -> None:
        self.directory = directory / namespace

    def _path(self, view: CostView, day: date) -> Path:
        return self.directory / view.cache_key / f"{day.isoformat()}.json"

    def load(self, view: CostView, day: date) -> DayResult | None:
        try:
            groups = json.loads(self._path(view, day).read_text())["Groups"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or unreadable: ask Cost Explorer again
        return DayResult(groups=groups, estimated=False)

    def store(self, view: CostView, day: date, result: DayResult) -> None:
        path = self._path(view, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({"Groups": result.groups}))
        partial.replace(path)  # atomic: a crash never leaves a half-written day behind

    def discard(self, view: CostView, day: date) -> None:
        # A day cached before it was final (by an older rule) would otherwise be served once it is.
        self._path(view, day).unlink(missing_ok=True)


class FetchFailed(Exception):
    """A view could not be read (failing after retries, out of budget, endless paging); says why."""


class CostExplorerReader:
    """Reads views day by day: final days from the cache, the rest from Cost Explorer within a budget.

    `requests` counts every call sent (retried attempts too) and never exceeds `max_requests`.
    `today` (UTC) decides which days are final, see `first_unsettled_day`.
    """

    def __init__(
        self,
        client: Any,
        *,
        cache: SpendCache | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 6,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 20.0,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        today: date | None = None,
    ) -> None:
        if max_requests < 1:
            raise ValueError(f"max_requests must be positive, not {max_requests}")
        self.client = client
        self.cache = cache
        self.sleep = sleep
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.max_requests = max_requests
        self.today = today or datetime.now(UTC).date()
        self.requests = 0
        self.answered = 0
        self.retries = 0
        self.cached_view_days = 0
        self._view_requests_from = 0

    @property
    def first_unsettled_day(self) -> date:
        return first_unsettled_day(self.today)

    def read_view(self, view: CostView, start: date, end: date) -> dict[date, DayResult]:
        """Every day of [start, end) of one view, or FetchFailed; caches final days only when all is read."""
        self._view_requests_from = self.requests
        days = days_between(start, end)
        unsettled_from = self.first_unsettled_day
        results: dict[date, DayResult] = {}
        if self.cache is not None:
            for day in days:
                if day >= unsettled_from:
                    self.cache.discard(view, day)
                    continue
                cached = self.cache.load(view, day)
                if cached is not None:
                    results[day] = cached
                    self.cached_view_days += 1
        fetched: dict[date, DayResult] = {}
        ranges = contiguous_ranges([day for day in days if day not in results])
        if ranges:  # a view the cache holds whole is instant: no line for it
            with progress.task(f"Cost Explorer {view.name}", unit="pages") as pages:
                for range_start, range_end in ranges:
                    fetched.update(self._fetch_range(view, range_start, range_end, pages))
        # Only after the whole view was read: a day from a view that failed half-way may lack groups.
        self._cache_final(view, fetched)
        results.update(fetched)
        return results

    def _cache_final(self, view: CostView, fetched: dict[date, DayResult]) -> None:
        if self.cache is None:
            return
        estimated_days = [day for day, result in fetched.items() if result.estimated]
        first_estimated = min(estimated_days) if estimated_days else None
        unsettled_from = self.first_unsettled_day
        for day, result in fetched.items():
            if result.estimated or day >= unsettled_from:
                continue
            if first_estimated is None or day < first_estimated:
                self.cache.store(view, day, result)

    @property
    def _view_spent(self) -> str:
        return spent(self.requests - self._view_requests_from)

    def _fetch_range(
        self, view: CostView, start: date, end: date, pages: progress.Task
    ) -> dict[date, DayResult]:
        request = {**view.request(), "TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()}}
        results: dict[date, DayResult] = {}
        page_token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            if page_token:
                request["NextPageToken"] = page_token
            page = self._call(request)
            pages.advance(detail=self._view_spent)
            descriptions = {
                attribute["Value"]: attribute["Attributes"]["description"]
                for attribute in page.get("DimensionValueAttributes", [])
                if attribute.get("Attributes", {}).get("description")
            }
            for by_time in page.get("ResultsByTime", []):
                day = date.fromisoformat(by_time["TimePeriod"]["Start"])
                result = results.setdefault(day, DayResult(groups=[], estimated=False))
                for group in by_time.get("Groups", []):
                    described = {key: descriptions[key] for key in group["Keys"] if key in descriptions}
                    result.groups.append({**group, DESCRIPTIONS_KEY: described} if described else group)
                result.estimated = result.estimated or bool(by_time.get("Estimated"))
            page_token = page.get("NextPageToken")
            if not page_token:
                return results
            if page_token in seen_tokens:
                # Following it again would page for ever, at $0.01 a page.
                raise FetchFailed(
                    f"Cost Explorer repeated a page token; stopped after {self._view_spent} on this view"
                )
            seen_tokens.add(page_token)

    def _check_budget(self) -> None:
        if self.requests >= self.max_requests:
            raise FetchFailed(
                f"request budget of {self.max_requests} reached ({spent(self.requests)} in all, "
                f"{self._view_spent} on this view); raise {MAX_REQUESTS_OPTION} to read it"
            )

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(1, self.max_attempts + 1):
            self._check_budget()
            # Counted before the call: a failed or throttled attempt may still be billed.
            self.requests += 1
            try:
                with mlp.aws.aws_errors("reading Cost Explorer"):
                    response = self.client.get_cost_and_usage(**request)
                self.answered += 1
                return response
            except botocore.exceptions.ClientError as exc:
                error = exc.response.get("Error", {})
                code = error.get("Code", "")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if code not in RETRYABLE_ERROR_CODES and status < 500:
                    raise FetchFailed(
                        f"Cost Explorer refused the request ({code}: {error.get('Message', '')})"
                    ) from exc
                failure = f"Cost Explorer kept failing ({code or status})"
            except RETRYABLE_TRANSPORT_ERRORS as exc:
                failure = f"Cost Explorer unreachable ({type(exc).__name__})"
            except mlp.aws.AwsUnreachable as exc:
                if exc.status != "unreachable":
                    raise
                # botocore has already retried the connection: this view is a missing part, the rest goes on.
                raise FetchFailed(f"Cost Explorer {exc.reason}") from exc
            except UserError as exc:
                if not self.answered:
                    raise  # refused from the first request: the user's to fix, nothing was read
                # Credentials that expire mid-run: what was read is kept, this view is named missing.
                raise FetchFailed(str(exc)) from exc
            if attempt < self.max_attempts:
                self._check_budget()  # never wait for a retry there is no request left for
                self.retries += 1
                self.sleep(min(self.backoff_seconds * 2 ** (attempt - 1), self.max_backoff_seconds))
        raise FetchFailed(f"{failure} after {self.max_attempts} attempts")


def _view_rows(view: CostView, day_results: dict[date, DayResult]) -> Iterator[dict[str, Any]]:
    for day, result in sorted(day_results.items(), key=lambda item: item[0]):
        for group in result.groups:
            row: dict[str, Any] = {
                "ChargePeriodStart": day,
                "x_CostView": view.name,
                "x_Estimated": result.estimated,
            }
            tags: dict[str, str] = {}
            for (kind, key), value in zip(view.group_by, group["Keys"], strict=True):
                if kind == "TAG":
                    # "team$ml" for tagged spend, "team$" for spend without the tag.
                    tag_value = value.split("$", 1)[1] if "$" in value else value
                    row[tag_column(key)] = tag_value
                    if tag_value:
                        tags[key] = tag_value
                else:
                    row[DIMENSION_COLUMNS[key]] = value
                if key == "LINKED_ACCOUNT":
                    row["SubAccountName"] = group.get(DESCRIPTIONS_KEY, {}).get(value) or value
            metrics = group.get("Metrics", {})
            row["BilledCost"] = float(metrics.get("UnblendedCost", {}).get("Amount", 0.0))
            row["EffectiveCost"] = float(metrics.get("AmortizedCost", {}).get("Amount", 0.0))
            row["BillingCurrency"] = metrics.get("UnblendedCost", {}).get("Unit", "USD")
            if USAGE_METRIC in metrics:
                row["ConsumedQuantity"] = float(metrics[USAGE_METRIC].get("Amount", 0.0))
            row["Tags"] = json.dumps(tags, sort_keys=True)
            yield row


def focus_frame(rows: Iterable[dict[str, Any]], tag_keys: Sequence[str]) -> pd.DataFrame:
    """Rows of any views as one frame with every FOCUS column and one `x_Tag_<key>` column per key."""
    columns = [*FOCUS_COLUMNS, *(tag_column(key) for key in tag_keys)]
    frame = pd.DataFrame(list(rows), columns=columns)
    start = pd.to_datetime(frame["ChargePeriodStart"], utc=True)
    frame["ChargePeriodStart"] = start
    frame["ChargePeriodEnd"] = start + pd.Timedelta(days=1)
    for money in ("BilledCost", "EffectiveCost", "ConsumedQuantity"):
        frame[money] = frame[money].astype("float64")
    frame["x_Estimated"] = frame["x_Estimated"].astype(bool)
    frame["BillingCurrency"] = frame["BillingCurrency"].fillna("USD")
    frame["Tags"] = frame["Tags"].fillna("{}")
    categories = frame["x_PurchaseType"].dropna().map(pricing_category)
    frame["PricingCategory"] = categories.reindex(frame.index)
    return frame


def read_spend(
    reader: CostExplorerReader,
    start: date,
    end: date,
    *,
    mandatory_tags: Sequence[str] = DEFAULT_MANDATORY_TAGS,
    on_view: Callable[[CostView], None] | None = None,
) -> Spend:
    """Every view of `plan_views` over [start, end); failed views become `missing` parts.

    A view that fails does not stop the others: those still readable within the reader's request
    budget are read.
    """
    rows: list[dict[str, Any]] = []
    missing: list[MissingPart] = []
    complete: set[str] = set()
    for view in plan_views(mandatory_tags):
        if on_view is not None:
            on_view(view)
        try:
            day_results = reader.read_view(view, start, end)
        except FetchFailed as exc:
            missing.extend(MissingPart(part=part, reason=str(exc)) for part in view.parts)
            continue
        complete.add(view.name)
        rows.extend(_view_rows(view, day_results))
    return Spend(
        start=start,
        end=end,
        mandatory_tags=tuple(mandatory_tags),
        frame=focus_frame(rows, report_tag_keys(mandatory_tags)),
        requests=reader.requests,
        retries=reader.retries,
        cached_view_days=reader.cached_view_days,
        missing=missing,
        complete_views=complete,
        max_requests=reader.max_requests,
    )


def cache_namespace(client: Any) -> str:
    """Cached days belong to one account behind one endpoint (a sandbox must not feed real reports)."""
    with mlp.aws.aws_errors("identifying the AWS account for the Cost Explorer cache"):
        account = mlp.aws.client("sts").get_caller_identity()["Account"]
    endpoint = hashlib.sha256(client.meta.endpoint_url.encode()).hexdigest()[:8]
    return f"{account}-{endpoint}"


def default_cache_dir() -> Path:
    override = os.environ.get(CACHE_DIR_ENV)
    return Path(override).expanduser() if override else DEFAULT_CACHE_DIR


def fetch_spend(
    start: date,
    end: date,
    *,
    mandatory_tags: Sequence[str] = DEFAULT_MANDATORY_TAGS,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    on_view: Callable[[CostView], None] | None = None,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    today: date | None = None,
) -> Spend:
    """Spend of [start, end) from the account's Cost Explorer, through the on-disk cache.

    At most `max_requests` GetCostAndUsage calls; `today` (UTC, default now) decides which days are
    final enough to cache.
    """
    # Retries are ours (counted, with injectable sleep), so botocore must not retry behind our back.
    client = mlp.aws.client("ce", mlp.aws.COST_EXPLORER_REGION, max_attempts=1)
    cache = SpendCache(cache_dir or default_cache_dir(), cache_namespace(client)) if use_cache else None
    reader = CostExplorerReader(client, cache=cache, sleep=sleep, max_requests=max_requests, today=today)
    return read_spend(reader, start, end, mandatory_tags=mandatory_tags, on_view=on_view)


def tag_value_cost_usd(
    key: str,
    value: str,
    start: date,
    end: date,
    *,
    client: Any | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> float | None:
    """UnblendedCost of everything tagged `key=value` over [start, end), e.g. one training run's cost.

    None when Cost Explorer cannot say (still failing after retries, or no data yet for the tag).
    """
    view = CostView(
        name=f"tag:{key}={value}",
        group_by=(("TAG", key),),
        parts=(f"cost of {key}={value}",),
        metrics=("UnblendedCost",),
        filter={"Tags": {"Key": key, "Values": [value], "MatchOptions": ["EQUALS"]}},
    )
    ce = client or mlp.aws.client("ce", mlp.aws.COST_EXPLORER_REGION, max_attempts=1)
    try:
        days = CostExplorerReader(ce, sleep=sleep).read_view(view, start, end)
    except FetchFailed:
        return None
    amounts = [
        float(group["Metrics"]["UnblendedCost"]["Amount"]) for day in days.values() for group in day.groups
    ]
    return round(sum(amounts), 2) if amounts else None
