import asyncio

import numpy as np
import pytest

from banditroute.catalog import Catalog, ModelSpec
from banditroute.events import DecisionRecord, new_decision_id
from banditroute.feedback import (
    DecisionExpiredError,
    DecisionNotFoundError,
    FeedbackRecorder,
    FeedbackReport,
    FeedbackSource,
    InvalidFieldError,
    RatingScale,
    event_cost_usd,
    feedback_quality,
    quality_from_rating,
)
from banditroute.store import MemoryStore, StoreUnavailable

WINDOW_SECONDS = 60.0
START_TIME = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(
        [
            ModelSpec("large", input_usd_per_mtok=3.0, output_usd_per_mtok=15.0),
            ModelSpec("small", input_usd_per_mtok=0.2, output_usd_per_mtok=0.4),
        ]
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START_TIME)


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)


@pytest.fixture
def recorder(
    store: MemoryStore, catalog: Catalog, clock: FakeClock
) -> FeedbackRecorder:
    return FeedbackRecorder(store, catalog, window_seconds=WINDOW_SECONDS, clock=clock)


def decision(clock: FakeClock, model: str = "small") -> DecisionRecord:
    return DecisionRecord(
        decision_id=new_decision_id(clock()),
        model=model,
        context=np.array([1.0, 0.25, -0.5], dtype=np.float32),
        input_tokens=1000,
        propensity=0.5,
        cost_weight=10.0,
        expected_cost_usd=0.001,
        created_at=clock(),
        posterior_version=0,
    )


def stored_decision(store: MemoryStore, clock: FakeClock, model: str = "small") -> str:
    record = decision(clock, model)
    asyncio.run(store.put_decision(record, WINDOW_SECONDS))
    return record.decision_id


def stream_events(store: MemoryStore) -> list:
    return asyncio.run(store.read_events("0-0", block_ms=0, count=100))


@pytest.mark.parametrize(
    ("rating", "scale", "quality"),
    [
        (True, RatingScale.THUMBS, 1.0),
        (False, RatingScale.THUMBS, 0.0),
        (1, RatingScale.THUMBS, 1.0),
        (0, RatingScale.THUMBS, 0.0),
        (1, RatingScale.STARS_5, 0.0),
        (3, RatingScale.STARS_5, 0.5),
        (5, RatingScale.STARS_5, 1.0),
        (4.5, RatingScale.STARS_5, 0.875),
        (1, RatingScale.JUDGE_10, 0.0),
        (10, RatingScale.JUDGE_10, 1.0),
        (5.5, RatingScale.JUDGE_10, 0.5),
        (0.0, RatingScale.UNIT, 0.0),
        (0.3, RatingScale.UNIT, 0.3),
        (1.0, RatingScale.UNIT, 1.0),
    ],
)
def test_rating_maps_onto_unit_quality(rating, scale, quality):
    assert quality_from_rating(rating, scale) == pytest.approx(quality)


@pytest.mark.parametrize(
    ("rating", "scale"),
    [
        (0, RatingScale.STARS_5),
        (6, RatingScale.STARS_5),
        (0.5, RatingScale.THUMBS),
        (2, RatingScale.THUMBS),
        (0, RatingScale.JUDGE_10),
        (11, RatingScale.JUDGE_10),
        (-0.1, RatingScale.UNIT),
        (1.5, RatingScale.UNIT),
        (float("nan"), RatingScale.UNIT),
        (True, RatingScale.STARS_5),
    ],
)
def test_rating_off_scale_names_rating(rating, scale):
    with pytest.raises(InvalidFieldError) as raised:
        quality_from_rating(rating, scale)

    assert raised.value.field == "rating"
    assert raised.value.status_code == 422
    assert scale.value in raised.value.message


def test_failed_call_without_rating_counts_as_zero():
    report = FeedbackReport("id", FeedbackSource.USER, error=True)

    assert feedback_quality(report) == 0.0


def test_rating_given_with_error_is_kept():
    report = FeedbackReport(
        "id", FeedbackSource.USER, rating=4, scale=RatingScale.STARS_5, error=True
    )

    assert feedback_quality(report) == pytest.approx(0.75)


def test_missing_rating_names_rating():
    report = FeedbackReport("id", FeedbackSource.USER)

    with pytest.raises(InvalidFieldError) as raised:
        feedback_quality(report)

    assert raised.value.field == "rating"


def test_missing_scale_names_scale():
    report = FeedbackReport("id", FeedbackSource.USER, rating=3)

    with pytest.raises(InvalidFieldError) as raised:
        feedback_quality(report)

    assert raised.value.field == "scale"


def test_feedback_is_appended_with_decision_context(recorder, store, clock):
    decision_id = stored_decision(store, clock, model="large")
    report = FeedbackReport(
        decision_id, FeedbackSource.JUDGE, rating=8.2, scale=RatingScale.JUDGE_10
    )

    outcome = asyncio.run(recorder.record(report))

    assert not outcome.duplicate
    assert outcome.model == "large"
    events = stream_events(store)
    assert [event_id for event_id, _ in events] == [outcome.event_id]
    event = events[0][1]
    assert event.decision_id == decision_id
    assert event.model == "large"
    assert event.quality == pytest.approx(0.8)
    assert event.source == "judge"
    np.testing.assert_array_equal(event.context, [1.0, 0.25, -0.5])


def test_duplicate_feedback_is_counted_once(recorder, store, clock):
    decision_id = stored_decision(store, clock)
    first = FeedbackReport(
        decision_id, FeedbackSource.USER, rating=True, scale=RatingScale.THUMBS
    )
    repeat = FeedbackReport(
        decision_id, FeedbackSource.USER, rating=False, scale=RatingScale.THUMBS
    )

    first_outcome = asyncio.run(recorder.record(first))
    clock.now += 1.0
    repeat_outcome = asyncio.run(recorder.record(repeat))

    assert not first_outcome.duplicate
    assert repeat_outcome.duplicate
    assert repeat_outcome.event_id == first_outcome.event_id
    assert len(stream_events(store)) == 1
    assert stream_events(store)[0][1].quality == 1.0


def test_unknown_decision_is_not_found(recorder):
    unknown_id = new_decision_id(START_TIME)
    report = FeedbackReport(
        unknown_id, FeedbackSource.USER, rating=1, scale=RatingScale.THUMBS
    )

    with pytest.raises(DecisionNotFoundError) as raised:
        asyncio.run(recorder.record(report))

    assert raised.value.status_code == 404
    assert raised.value.value == unknown_id


def test_malformed_id_skips_store_lookup(recorder, store):
    # A closed store raises StoreUnavailable on every call, so reaching it would fail.
    asyncio.run(store.close())
    report = FeedbackReport(
        "not-a-decision", FeedbackSource.USER, rating=1, scale=RatingScale.THUMBS
    )

    with pytest.raises(DecisionNotFoundError):
        asyncio.run(recorder.record(report))


def test_decision_past_window_is_expired(recorder, store, clock):
    decision_id = stored_decision(store, clock)
    clock.now += WINDOW_SECONDS + 1.0
    report = FeedbackReport(
        decision_id, FeedbackSource.USER, rating=1, scale=RatingScale.THUMBS
    )

    with pytest.raises(DecisionExpiredError) as raised:
        asyncio.run(recorder.record(report))

    assert raised.value.status_code == 410
    assert raised.value.field == "decision_id"
    assert stream_events(store) == []


def test_cost_is_priced_from_reported_tokens(recorder, store, clock):
    decision_id = stored_decision(store, clock, model="large")
    report = FeedbackReport(
        decision_id,
        FeedbackSource.USER,
        rating=1,
        scale=RatingScale.THUMBS,
        input_tokens=2000,
        output_tokens=100,
    )

    asyncio.run(recorder.record(report))

    event = stream_events(store)[0][1]
    assert event.output_tokens == 100
    assert event.input_tokens == 2000
    assert event.cost_usd is None
    assert event_cost_usd(event, recorder.catalog) == pytest.approx(
        2000 * 3.0e-6 + 100 * 15.0e-6
    )


def test_cost_uses_routing_estimate_of_input_tokens(recorder, store, clock):
    decision_id = stored_decision(store, clock, model="small")
    report = FeedbackReport(
        decision_id, FeedbackSource.USER, error=True, output_tokens=50
    )

    asyncio.run(recorder.record(report))

    event = stream_events(store)[0][1]
    assert event.quality == 0.0
    assert event.error
    assert event.input_tokens == 1000
    assert event_cost_usd(event, recorder.catalog) == pytest.approx(
        1000 * 0.2e-6 + 50 * 0.4e-6
    )


def test_reported_cost_is_kept(recorder, store, clock):
    decision_id = stored_decision(store, clock)
    report = FeedbackReport(
        decision_id,
        FeedbackSource.USER,
        rating=1,
        scale=RatingScale.THUMBS,
        output_tokens=50,
        cost_usd=0.125,
    )

    asyncio.run(recorder.record(report))

    event = stream_events(store)[0][1]
    assert event.cost_usd == 0.125
    assert event_cost_usd(event, recorder.catalog) == 0.125


def test_closed_store_raises_unavailable(recorder, store, clock):
    decision_id = stored_decision(store, clock)
    asyncio.run(store.close())
    report = FeedbackReport(
        decision_id, FeedbackSource.USER, rating=1, scale=RatingScale.THUMBS
    )

    with pytest.raises(StoreUnavailable):
        asyncio.run(recorder.record(report))
