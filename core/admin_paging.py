"""Changelist pieces for tables of millions of rows: a paginator that never counts a
whole table, and searches that match ids exactly on their indexes."""

import uuid
from typing import Any

from django.contrib import messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import EmptyPage, Paginator
from django.db.models import Q, QuerySet
from django.utils.functional import cached_property

# Count at most this many rows of a changelist; beyond it the list says "10,000+" and
# offers its first pages (filters and searches narrow it down). Counting a million rows,
# or skipping half a million for ?p=5000, took seconds.
COUNT_CAP = 10_000


class CappedPaginator(Paginator):
    """A paginator whose count stops at COUNT_CAP: one `count(*)` over a `LIMIT`ed
    subquery, which reads at most COUNT_CAP + 1 index entries; the last page it offers
    skips at most COUNT_CAP rows. `capped` says whether there are more."""

    @cached_property
    def _counted(self) -> int:
        try:
            return self.object_list.order_by().values("pk")[: COUNT_CAP + 1].count()
        except (ValueError, OverflowError) as exc:
            # A filter value the database cannot take (?create_time__year=99999), met
            # here when the query is first built: the admin's answer to a bad filter,
            # not a 500.
            raise IncorrectLookupParameters(str(exc)) from exc

    @cached_property
    def count(self) -> int:
        return min(self._counted, COUNT_CAP)

    @property
    def capped(self) -> bool:
        return self._counted > COUNT_CAP

    def validate_number(self, number: Any) -> int:
        # A page past the cap (an old link, a hand-typed ?p=5000) shows the last page
        # offered rather than the admin's "database error" page.
        try:
            return super().validate_number(number)
        except EmptyPage:
            if int(number) > 1:
                return self.num_pages
            raise


def uuid_or_none(term: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(term.strip())
    except ValueError:
        return None


def exact_search(queryset: QuerySet, term: str, *, ids: list[str], names: list[str]) -> QuerySet:
    """Rows whose `ids` fields equal the search term when it is a uuid, else whose
    `names` fields equal it: equality on indexed columns, never a text scan (the admin's
    own `=field` search compares `UPPER(field::text)`, which reads every row)."""
    term = term.strip()
    if not term:
        return queryset
    value = uuid_or_none(term)
    fields = ids if value is not None else names
    if not fields:
        return queryset.none()
    match = Q()
    for field in fields:
        match |= Q(**{field: value if value is not None else term})
    return queryset.filter(match)


class BoundedActions:
    """An action acts on at most `action_limit` rows in one request: "select all"
    under a capped count offered 10,000 jobs and cancelled every one that matched
    (128,997, 15 s in one request). Beyond the bound the action is refused and the list
    says how to narrow it."""

    action_limit = COUNT_CAP

    def response_action(self, request: Any, queryset: QuerySet) -> Any:
        if request.POST.get("select_across") == "1":
            limit = self.action_limit
            if queryset.order_by().values("pk")[: limit + 1].count() > limit:
                name = self.model._meta.verbose_name_plural
                self.message_user(
                    request,
                    f"Nothing done: more than {limit:,} {name} match, and one action changes at most {limit:,}. "
                    "Narrow the list with its filters or search first.",
                    messages.ERROR,
                )
                return None  # the admin goes back to the list
        return super().response_action(request, queryset)


class IndexedOrderingChangeList(ChangeList):
    """Sorts only by the columns the admin declares sortable (`sortable_by`): a
    hand-made `?o=` for another column is ignored, since sorting a million rows by an
    unindexed column took seconds."""

    def get_ordering_field(self, field_name: Any) -> Any:
        if self.sortable_by is not None and field_name not in self.sortable_by:
            return None
        return super().get_ordering_field(field_name)


class LargeTableAdmin(BoundedActions):
    """For the model admins of tables that grow to millions of rows: capped counts (and
    no whole-table count), and a search on ids and names by equality. Subclasses name
    `search_ids` (fields a uuid is looked up in) and `search_names` (fields any other
    term must equal)."""

    paginator = CappedPaginator
    show_full_result_count = False
    search_ids: list[str] = []
    search_names: list[str] = []

    def get_changelist(self, request: Any, **kwargs: Any) -> type[ChangeList]:
        return IndexedOrderingChangeList

    def get_search_results(self, request: Any, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        return exact_search(queryset, search_term, ids=self.search_ids, names=self.search_names), False
