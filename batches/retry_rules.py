"""A submission's retry rules (`retry: {"attempts": N, "rules": [...]}`), checked.

AWS Batch's `evaluateOnExit` is the model. Each rule matches an attempt that failed
with one of `on_exit_code` (a list of exit codes) or with `on_reason` (a reason code of
core.reason_codes.RULE_REASONS), and says `retry` or `exit`; an `out_of_memory` rule
that retries may give `memory_factor` (the next attempt asks that much more memory, up
to BATCHES_MAX_MEMORY_MIB). jobs.retry_policy applies them: the first rule that matches
decides, and a failure no rule matches is retried while attempts are left (as with
`max_attempts` alone)."""

from typing import Any

from django.core.exceptions import ValidationError

from core import reason_codes

MAX_RULES = 20
MAX_EXIT_CODES = 256
MAX_MEMORY_FACTOR = 16.0


def check_retry_rules(*, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules as stored on the batch (only the keys each rule uses), or
    ValidationError naming `retry.rules[i].<field>`: each rule names exactly one of
    `on_exit_code` (a non-empty list of codes 0-255) and `on_reason` (a code a user's
    job can fail with: the infrastructure ones are always requeued); `action` is
    `retry` or `exit`; `memory_factor` (above 1, at most MAX_MEMORY_FACTOR) only on an
    `out_of_memory` rule that retries."""
    if len(rules) > MAX_RULES:
        raise ValidationError({"retry.rules": [f"must list at most {MAX_RULES} rules, not {len(rules)}"]})
    errors: dict[str, list[str]] = {}
    checked = []
    for index, rule in enumerate(rules):
        field = f"retry.rules[{index}]"
        codes, reason, action, factor = rule.get("on_exit_code"), rule.get("on_reason"), rule.get("action"), rule.get("memory_factor")
        if (codes is None) == (reason is None):
            errors[field] = ["give exactly one of on_exit_code and on_reason"]
            continue
        if codes is not None and not 1 <= len(codes) <= MAX_EXIT_CODES:
            errors[f"{field}.on_exit_code"] = [f"must list between 1 and {MAX_EXIT_CODES} exit codes"]
        if codes is not None and any(not 0 <= code <= 255 for code in codes):
            errors[f"{field}.on_exit_code"] = ["exit codes are between 0 and 255"]
        if reason is not None and reason not in reason_codes.RULE_REASONS:
            errors[f"{field}.on_reason"] = [_reason_refused(reason)]
        if action not in ("retry", "exit"):
            errors[f"{field}.action"] = ["must be retry or exit"]
        if factor is not None:
            if reason != reason_codes.OUT_OF_MEMORY or action != "retry":
                errors[f"{field}.memory_factor"] = ["only an on_reason out_of_memory rule whose action is retry may give memory_factor"]
            elif not 1.0 < factor <= MAX_MEMORY_FACTOR:
                errors[f"{field}.memory_factor"] = [f"must be above 1 and at most {MAX_MEMORY_FACTOR:g}, not {factor:g}"]
        kept: dict[str, Any] = {"on_exit_code": sorted(set(codes))} if codes is not None else {"on_reason": reason}
        kept["action"] = action
        if factor is not None:
            kept["memory_factor"] = float(factor)
        checked.append(kept)
    if errors:
        raise ValidationError(errors)
    return checked


def _reason_refused(reason: str) -> str:
    if reason in reason_codes.INFRASTRUCTURE:
        return f"{reason} is an infrastructure failure: it is always requeued without using an attempt, whatever the rules say"
    if reason in (reason_codes.SUCCEEDED, reason_codes.CANCELLED):
        return f"{reason} is never retried"
    return f"must be one of: {', '.join(sorted(reason_codes.RULE_REASONS))}"
