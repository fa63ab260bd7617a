"""Answers of a level: typed, pickleable (they cross Ray), with JSON forms that keep the old keys."""

import pickle

import torch

from cluster.level.protocol import CircuitRef, ProposeResult, PushResult, Refusal, RejectCode


def test_a_refusal_carries_its_code_and_a_reason_starting_with_the_code_value():
    out = PushResult.refused(Refusal(RejectCode.BAD_SHAPE, "'m.q' is (8, 3), expected (8, 4)"), 7)
    assert out == PushResult(False, 7, RejectCode.BAD_SHAPE, "bad shape: 'm.q' is (8, 3), expected (8, 4)")
    assert out.to_dict() == {"status": "rejected", "version": 7, "code": "bad shape", "reason": out.reason}
    assert PushResult.ok(3).to_dict() == {"status": "accepted", "version": 3}


def test_only_an_acceptance_or_a_duplicate_means_the_level_holds_the_push():
    assert PushResult.ok(1).held
    assert PushResult.refused(Refusal(RejectCode.DUPLICATE, "1 is not above 1"), 1).held
    assert not any(PushResult.refused(Refusal(code, "x"), 1).held for code in RejectCode if code is not
                   RejectCode.DUPLICATE)


def test_answers_pickle_as_ray_sends_them():
    out = PushResult.refused(Refusal(RejectCode.STALE, "9 versions behind, limit 8"), 12)
    assert pickle.loads(pickle.dumps(out)) == out and pickle.loads(pickle.dumps(out)).code is RejectCode.STALE
    ref = CircuitRef("m.q", torch.ones(3), torch.ones(2))
    back = pickle.loads(pickle.dumps(ProposeResult(True, 2, removals=(ref,), rejected=(("m.v", "why"),))))
    assert back.version == 2 and back.removals[0].module == "m.q" and torch.equal(back.removals[0].u, ref.u)
    assert back.rejected == (("m.v", "why"),)
