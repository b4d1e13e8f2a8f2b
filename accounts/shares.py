"""Users' weights in fair share and their groups: set by operators (`set_share`, the
admin; both through the services here, the one write path), read by `jobs.fairshare`."""

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import ShareGroup, UserShare

# Weights are relative; a bound keeps a typo (a weight of 10**9) from meaning "everything".
MAX_WEIGHT = 1_000_000

# set_group's fields as set_share names them.
_GROUP_FIELDS = {"name": "group", "weight": "group_weight"}


def check_weight(*, weight: int, field: str = "weight") -> None:
    """Refuse a weight outside 1..MAX_WEIGHT: ValidationError on `field` (forms check
    with it before they save through the services below)."""
    if not 1 <= weight <= MAX_WEIGHT:
        raise ValidationError({field: [f"must be between 1 and {MAX_WEIGHT}, not {weight}"]})


def set_group(*, name: str, weight: int | None = None) -> ShareGroup:
    """The group `name`, created with weight `weight` (or 1) if it does not exist; an
    existing group's weight changes only when `weight` is given. Refuses a weight
    outside 1..MAX_WEIGHT and an invalid name (ValidationError on `weight`, `name`)."""
    if weight is not None:
        check_weight(weight=weight)
    with transaction.atomic():
        group = ShareGroup.objects.select_for_update().filter(name=name).first()
        if group is None:
            group = ShareGroup(name=name, weight=weight or 1)
            group.full_clean()
            group.save()
        elif weight is not None and weight != group.weight:
            group.weight = weight
            group.save(update_fields=["weight"])
    return group


def set_share(
    *, user: AbstractBaseUser, weight: int | None = None, group: str | None = None, group_weight: int | None = None, no_group: bool = False
) -> UserShare:
    """Set `user`'s weight (default 1 when never set) and group: `group` names one
    (created with weight `group_weight`, or 1, if it does not exist; an existing group's
    weight changes only when `group_weight` is given), `no_group` takes them out of
    theirs. Refuses weights outside 1..MAX_WEIGHT and an invalid group name
    (ValidationError naming the field). Returns the user's share."""
    if weight is not None:
        check_weight(weight=weight)
    if group_weight is not None:
        check_weight(weight=group_weight, field="group_weight")
    if group is not None and no_group:
        raise ValidationError({"group": ["give a group or take the user out of theirs, not both"]})
    with transaction.atomic():
        share, _ = UserShare.objects.select_for_update().get_or_create(user=user)
        if weight is not None:
            share.weight = weight
        if group is not None:
            try:
                share.group = set_group(name=group, weight=group_weight)
            except ValidationError as exc:  # named as this service's arguments are
                raise ValidationError({_GROUP_FIELDS.get(f, f): m for f, m in exc.message_dict.items()}) from exc
        elif group_weight is not None:
            raise ValidationError({"group_weight": ["name the group (--group) whose weight this is"]})
        if no_group:
            share.group = None
        share.full_clean()
        share.save()
    return share
