"""Differential search of a one-to-one (a scalar one-to-many): random programs over User 1-1
Profile (tests._rel_models.user_profile) run in lockstep through SQLAlchemy 2.x and retort,
each on its own schema, under both cascades ("save-update, merge" and "all, delete-orphan").
After every step both must agree on the outcome (a value, or the class of the error), on the
lifecycle of every object the program holds, and, after a flush, commit or rollback, on the
rows the transaction sees; at the end on the committed rows.

test_differential.py searches the one-to-many, many-to-many and self-referential models with
detached objects, merge() and expunge() included; this file adds the one-to-one those models
lack. Its draw leaves out what SPEC §5 documents as different (the program stops where an
outcome is a documented improvement):

- retort loads the object a one-to-one replaces at the assignment (and moves it then: its back
  reference and its key), SQLAlchemy's flush loads it; so no expiry (nor refresh) is drawn while a
  relationship change is unflushed (SQLAlchemy's expiry of the owner forgets the change, and
  its flush never loads the replaced object), nor a read of a profile's many-to-one, nor a
  set of one that differs between the two (SQLAlchemy's backref leaves the replaced
  profile's pointing at its old user: setting it to that user is a change in retort only);
- a relationship set next to a foreign key set by hand since the last flush: which of the two
  the flush writes differs (retort reads an unchanged relationship from the key), so the draw
  sets either kind until a flush; nor is the key set of a profile given the user None it had
  while SQLAlchemy had not loaded it (a change to SQLAlchemy only, kept past a rollback);
- delete() of an object given a parent since the last flush deletes it in retort, where
  SQLAlchemy's flush cancels the delete (test_differential.py, test_improvement_delete_of_an_
  object_just_given_a_parent_is_honoured): no delete() is drawn while a relationship change
  is unflushed, nor of a profile a user without a row holds (a change kept past a rollback);
  where the delete cascade of its old user marks such a profile deleted, the program stops
  (Lockstep.cascade_marked_a_profile_a_new_user_holds);
- retort refuses a change to an object marked deleted or deleted by a flush (SPEC §4), and
  retort keeps the primary key of an expired object: the draw changes and reads no deleted
  object;
- SQLAlchemy sends the UPDATEs of one flush in key order, which can break the unique user_id
  when two profiles swap users; retort clears keys first (an improvement: the program stops);
- an object expired, then made transient by a rollback of its INSERT, keeps its values in
  retort and stays expired in SQLAlchemy (which cannot insert it again): the draw leaves it
  alone, and the program stops where SQLAlchemy's flush meets it all the same (it cannot
  refresh it); so is one whose columns SQLAlchemy's flush loaded before that rollback (to read
  the key it expires too) where retort's did not;
- a user's one-to-one set to the profile it still holds, which another user took since (a
  one-to-one's move leaves the old owner's value, in both libraries): retort's profile comes
  back to the user, SQLAlchemy's sees no change (the program stops,
  Lockstep.takes_back_a_profile_another_user_took);
- a user's one-to-one set while not loaded (or a profile's many-to-one set to such a user, or
  away from one, whose one-to-one the backref sets or clears): SQLAlchemy's flush loads the
  profile it held and clears its key, unless its parent tracking still names a parent (the
  profile was given the user, or another user, in this session), where it leaves the key;
  retort clears it (the program stops, Lockstep.lets_go_a_profile_sa_tracks_unloaded);
- under delete-orphan, a pending profile given another user: SQLAlchemy's backref takes it
  from its user first, so that its orphan check expunges it, retort's moves it (the program
  stops, Lockstep.pending_profile_moved);
- under delete-orphan, a profile whose user is set to None while that user's one-to-one is
  not loaded: retort loads it at the assignment and deletes the orphan, SQLAlchemy's flush
  writes NULL and keeps it (the program stops, Lockstep.orphan_kept_by_sa_only);
- under delete-orphan, a profile whose user has no row, let go by another user without a row
  (a one-to-one's move leaves the old owner's value): SQLAlchemy's parent tracking takes the
  two for one and expunges the profile as an orphan, retort keeps it (a SQLAlchemy bug: the
  program stops, Lockstep.expunged_by_sa_for_a_rowless_user);
- an object whose DELETE a flush ran is left alone once a rollback undid it; where a cascade
  brings it back after a rollback that undid its INSERT too, and a flush inserts it again,
  SQLAlchemy reports it deleted (its rollback left the flag set), retort persistent (the
  program stops, Lockstep.inserted_again_reported_deleted_by_sa);
- SQLAlchemy's rollback of a SAVEPOINT expires an object set to a value it had inside it,
  retort's leaves it loaded: a read that loads (and autoflushes) in one library only is
  preceded by a flush of both (Lockstep.loads_in_one_library_only); where the values read
  differ (a key set by hand on the other side since), and at a delete() of such an object
  (whose cascade follows what each holds), the program stops; the other way round, an object
  got again after a flush inside the SAVEPOINT changed its row is a new instance in
  SQLAlchemy (its weak identity map freed the one the flush wrote), which its rollback leaves
  loaded with the values undone, where retort's rollback expires it: the program stops at
  such a rollback (Lockstep.expired_in_rt_only);
- a profile let go while outside the session, then added: under delete-orphan SQLAlchemy's
  flush sends a DELETE for it, which has no row (the program stops); retort inserts it;
- a profile that lost a user without a row (outside the session, or pending, which then leaves
  it as an orphan), then added: under delete-orphan SQLAlchemy's flush inserts it, and a later
  flush with a change of it deletes it as an orphan; retort keeps it (the program stops,
  Lockstep.orphan_deleted_by_sa_only);
- a profile made transient by a rollback, holding a user whose key its user_id no longer
  holds, in the session again: retort inserts it with the user's key, SQLAlchemy with the
  user_id it holds (an improvement: the program stops, Lockstep.stale_key_to_insert);
- add() of an object whose many-to-one names an object whose DELETE was flushed raises in
  both; SQLAlchemy's leaves the object added, retort's attaches nothing (an improvement: the
  program stops);
- add() of a profile a rollback made transient, its many-to-one set since: SQLAlchemy's
  cascade follows the value before (kept past the rollback) and raises where that user's
  DELETE was flushed since; retort's adds it (an improvement: the program stops);
- a profile a one-to-one replaced, where the user's one-to-one did not hold it at the last
  flush: SQLAlchemy's backref leaves it naming the user, and its flush writes that user's key
  (where the profile was given the user since) or nothing; retort's takes the user away and
  writes no user (the program stops, Lockstep.stale_user_to_flush);
- a user a rollback made transient, whose one-to-one replaced a profile SQLAlchemy never
  loaded (it defers that load to each reading of the history): retort's add() of the user
  brings the profile into the session, SQLAlchemy's does not, and its flush fails (the program
  stops, Lockstep.replaced_profile_kept_by_retort_only);
- a user a rollback made new again, added again, whose one-to-one let go a profile that
  named it in the flush the rollback undid: SQLAlchemy's flush writes a NULL user_id over the
  profile's row, retort's leaves it (the program stops, Lockstep.stale_removal_to_flush);
- two users whose one-to-one both hold one profile, each with a change to flush: SQLAlchemy
  writes either user's key, by the order of a set; retort the profile's many-to-one (the
  program stops, Lockstep.claimed_twice, and Lockstep.claimed_twice_in_session where a claim
  made outside the session is attached since); likewise where a user's claim contradicts the
  profile's many-to-one, set since (Lockstep.claimed_against_its_many_to_one);
- new objects take keys no row or object has had (the row switch of a new object taking a
  deleted object's key is searched by test_differential.py).
"""

from __future__ import annotations

import gc
import os
import re
import warnings
from collections.abc import Iterator, Set
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retort.engine import Engine
from tests._rel_models import Api, sqlalchemy_api, user_profile

pytest.importorskip("sqlalchemy")
from sqlalchemy.orm.base import PASSIVE_NO_RESULT

_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
_PROFILES = {
    "ci": settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=_SUPPRESS,
        derandomize=True,
        database=None,
    ),
    "nightly": settings(max_examples=1000, deadline=None, suppress_health_check=_SUPPRESS),
}
# every draw is one integer of the same bounds, reduced modulo the options: a draw rule reads
# state that can change between runs of one program (SQLAlchemy's flush follows the order of
# its sets), and lists whose length followed it would give a replay other bounds, which
# hypothesis reports as FlakyStrategyDefinition without the program (test_differential.py:
# Drawer.choice)
_CHOICE = st.integers(0, 2**16 - 1)


def _one(data: st.DataObject, options: list[Any], label: str) -> Any:
    return options[data.draw(_CHOICE, label=label) % len(options)]


# SQLAlchemy's warning of a DELETE that matched fewer rows than it named
_DELETE_SHORT = re.compile(
    r"DELETE statement on table '\w+' expected to delete \d+ row\(s\); \d+ were matched"
)

_STEPS = {"ci": 25, "nightly": 50}
CASCADES = ["save-update, merge", "all, delete-orphan"]
SEED_USERS = [(1, "u1"), (2, "u2"), (3, "u3")]
SEED_PROFILES = [(1, "p1", 1), (2, "p2", None)]
KEYS = [1, 2, 3, 4]  # get() of keys with and without a row
FLUSHING = ("flush", "commit", "rollback", "rollback_nested", "commit_nested")

Step = tuple[Any, ...]


def _profile_name() -> str:
    name = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    return name if name in _PROFILES else "ci"


class Divergence(AssertionError):
    pass


@dataclass(frozen=True)
class Outcome:
    ok: bool
    value: Any  # the step's value, or the error's class name
    error: BaseException | None = field(default=None, compare=False)


@dataclass
class Side:
    """One library's session over its schema, and the objects the program holds."""

    api: Api
    schema: str
    User: Any
    Profile: Any
    session: Any = None
    handles: list[Any] = field(default_factory=list)
    nested: list[Any] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)  # by the last step

    def start(self, admin: psycopg.Connection[Any]) -> None:
        admin.execute(f"TRUNCATE {self.schema}.profiles, {self.schema}.users")
        with admin.cursor() as cur:
            cur.executemany(f"INSERT INTO {self.schema}.users VALUES (%s, %s)", SEED_USERS)
            cur.executemany(
                f"INSERT INTO {self.schema}.profiles VALUES (%s, %s, %s)", SEED_PROFILES
            )
        self.session = self.api.session()
        self.handles = []
        self.nested = []

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def model(self, name: str) -> Any:
        return self.User if name == "User" else self.Profile

    def held_loaded(self, name: str, key: int) -> bool:
        """Whether the identity map holds the object of this key, not expired as a whole:
        get() then answers without SQL, and without an autoflush."""
        model = self.model(name)
        if self.api.name == "retort":
            obj = self.session._core.identity_lookup(model.__mapper__._core, (key,))
        else:
            obj = self.session.identity_map.get(self.session.identity_key(model, key))
        return obj is not None and not self.api.inspect(obj).expired

    def lifecycle(self, obj: Any) -> str:
        insp = self.api.inspect(obj)
        for name in ("transient", "pending", "persistent", "deleted", "detached"):
            if getattr(insp, name):
                return name
        raise AssertionError(obj)  # pragma: no cover

    def norm(self, value: Any) -> Any:
        """A related object as its handle (None for none): the same in both libraries."""
        if value is None:
            return None
        return next(i for i, h in enumerate(self.handles) if h is value)

    def run(self, step: Step) -> Any:
        s, h, kind = self.session, self.handles, step[0]
        if kind == "get":
            obj = s.get(self.model(step[1]), step[2])
            if obj is None:
                return None
            if not any(o is obj for o in h):
                h.append(obj)
            return self.norm(obj)
        if kind == "new":
            _, name, key, add = step
            model = self.model(name)
            obj = model(id=key, name=f"n{key}") if name == "User" else model(id=key, bio=f"n{key}")
            h.append(obj)
            if add:
                s.add(obj)
            return None
        if kind == "set":  # ("set", handle, "profile" | "user", handle or None)
            _, i, attr, j = step
            setattr(h[i], attr, None if j is None else h[j])
            return None
        if kind == "set_fk":
            h[step[1]].user_id = step[2]
            return None
        if kind == "read":
            _, i, attr = step
            value = getattr(h[i], attr)
            if attr in ("profile", "user"):
                if value is not None and not any(o is value for o in h):
                    h.append(value)
                return self.norm(value)
            return value
        if kind in ("add", "delete", "expire", "refresh"):
            getattr(s, kind)(h[step[1]])
            return None
        if kind in ("expire_all", "flush"):
            getattr(s, kind)()
            return None
        if kind in ("commit", "rollback"):
            getattr(s, kind)()
            self.nested.clear()
            return None
        if kind == "begin_nested":
            self.nested.append(s.begin_nested())
            return None
        if kind in ("rollback_nested", "commit_nested"):
            if self.nested:
                tx = self.nested.pop()
                tx.rollback() if kind == "rollback_nested" else tx.commit()
            return None
        raise AssertionError(step)  # pragma: no cover

    def attempt(self, step: Step) -> Outcome:
        with warnings.catch_warnings(record=True) as caught:
            # (an object outside the session named by a relationship: both warn, and write
            # nothing for it)
            warnings.simplefilter("always")
            try:
                return Outcome(True, self.run(step))
            except Exception as err:
                return Outcome(False, type(err).__name__, err)
            finally:
                self.warned = [str(w.message) for w in caught]

    def members(self) -> set[int]:
        """The handles of the objects in the session."""
        return {i for i, obj in enumerate(self.handles) if obj in self.session}

    def rows(self, admin: psycopg.Connection[Any], committed: bool) -> Any:
        sql = ("SELECT * FROM {}users ORDER BY id", "SELECT * FROM {}profiles ORDER BY id")
        if committed:
            return [admin.execute(q.format(f"{self.schema}.")).fetchall() for q in sql]
        conn = self.session.connection()
        return [[tuple(r) for r in conn.exec_driver_sql(q.format("")).fetchall()] for q in sql]


@dataclass
class Lockstep:
    sa: Side
    rt: Side
    admin: psycopg.Connection[Any]
    program: list[str] = field(default_factory=list)
    next_key: int = 6
    # a relationship set, or a foreign key set by hand, since the last flush of every change
    relationship_set: bool = False
    key_set: bool = False
    # the handles whose DELETE a flush ran once: a rollback that undoes it leaves SQLAlchemy's
    # object in a state of its own (test_differential.py: Drawer.marked_deleted_once)
    deleted_once: set[int] = field(default_factory=set)
    # the handles of the profiles that lost a user while outside any session, without a row
    # (or with a row a rollback undid since: let_go_with_a_row)
    let_go_outside: set[int] = field(default_factory=set)
    # the handles of the profiles with a row that lost a user since the last flush
    let_go_with_a_row: set[int] = field(default_factory=set)
    # the handles of the profiles let go by a user without a row, outside the session, whose
    # many-to-one did not name that user (loaded again from the row since it took them)
    let_go_unnamed: set[int] = field(default_factory=set)

    def fail(self, what: str, sa: Any, rt: Any) -> None:
        listing = "\n".join(f"  {i:2}. {p}" for i, p in enumerate(self.program))
        raise Divergence(
            f"retort diverges from SQLAlchemy: {what}\n  sqlalchemy: {sa!r}\n  retort:     {rt!r}"
            f"\nprogram:\n{listing}"
        )

    def usable(self, i: int) -> bool:
        """Whether the program may change or read handle `i`: in the session, or transient,
        and neither marked deleted nor deleted by a flush (in both libraries)."""
        if i in self.deleted_once:
            return False
        if self.expired_unrowed(self.sa.handles[i]):
            # expired, then made transient by a rollback of its INSERT: SQLAlchemy's stays
            # expired (it cannot refresh it, nor insert it again), retort's keeps its values
            # (test_differential.py: Drawer.kept_by_retort_only)
            return False
        if any(
            self.expired_unrowed(self.sa.handles[j])
            for side in (self.sa, self.rt)
            for j in self.related(side, i)
        ):
            # nor one whose save-update cascade reaches such an object (by either library's
            # relationship): SQLAlchemy's flush would fail on it, and the objects retort's
            # cascade goes on to differ (SQLAlchemy's SAVEPOINT rollback expired the one-to-one
            # it changed, retort's keeps the value before the change, and follows it)
            return False
        if self.columns_loaded_by_sa_flush_only(i):
            return False
        return all(
            side.lifecycle(side.handles[i]) in ("transient", "pending", "persistent")
            and side.handles[i] not in side.session.deleted
            for side in (self.sa, self.rt)
        )

    def expired_unrowed(self, sa_obj: Any) -> bool:
        """Whether SQLAlchemy's object is expired and has no row (see usable)."""
        insp = self.sa.api.inspect(sa_obj)
        return not insp.has_identity and bool(insp.expired_attributes)

    @staticmethod
    def related(side: Side, i: int) -> list[int]:
        """The handles of the objects side's handle `i` holds in its relationship (as loaded:
        none is loaded to see)."""
        value = side.handles[i].__dict__.get("profile", side.handles[i].__dict__.get("user"))
        return [j for j, o in enumerate(side.handles) if o is value and value is not None]

    def columns_loaded_by_sa_flush_only(self, i: int) -> bool:
        """Whether handle `i`, without a row, holds columns in SQLAlchemy only: the other
        way round from the expired object above, SQLAlchemy's flush loaded the columns an
        expiry had taken (to read the key it expires too) before a rollback undid the object's
        INSERT, retort's did not need to, and cannot insert the object again
        (test_differential.py: Drawer.expired_by_retort_only)."""
        sa_obj = self.sa.handles[i]
        if self.sa.api.inspect(sa_obj).has_identity:
            return False
        theirs, mine = sa_obj.__dict__, self.rt.handles[i].__dict__
        columns = ("id", "name") if type(sa_obj).__name__ == "User" else ("id", "bio")
        return any(c in theirs and c not in mine for c in columns)

    def draw(self, data: st.DataObject) -> Step:
        sa = self.sa
        users = [i for i, o in enumerate(sa.handles) if type(o).__name__ == "User"]
        profiles = [i for i, o in enumerate(sa.handles) if type(o).__name__ == "Profile"]
        usable = [i for i in range(len(sa.handles)) if self.usable(i)]
        kinds = ["get", "new", "flush", "commit", "begin_nested", "rollback_nested"]
        kinds += ["rollback", "commit_nested"]
        if usable:
            kinds += ["read", "add"]
            if not self.relationship_set:
                kinds += ["delete"]
        if not self.relationship_set and not self.key_set:
            kinds += ["expire", "refresh", "expire_all"]
        if not self.key_set and any(i in usable for i in users + profiles):
            kinds += ["set", "set", "set"]
        if not self.relationship_set and any(i in usable for i in profiles):
            kinds += ["set_fk"]
        kind = _one(data, kinds, "kind")
        if kind == "get":
            name = _one(data, ["User", "Profile"], "class")
            return ("get", name, _one(data, KEYS, "key"))
        if kind == "new":
            self.next_key += 1
            name = _one(data, ["User", "Profile"], "class")
            return ("new", name, self.next_key - 1, _one(data, [False, True], "add"))
        if kind == "delete":
            # (nor of a profile a user without a row holds: given a parent since the last
            # flush, its relationship kept past a rollback)
            deletable = [i for i in usable if not self.held_by_a_new_user(i)]
            if not deletable:
                return ("flush",)
            return ("delete", _one(data, deletable, "object"))
        if kind in ("read", "add"):
            i = _one(data, usable, "object")
            if kind != "read":
                return (kind, i)
            # (the many-to-one of a profile a one-to-one replaced differs until the flush,
            # retort having moved it at the assignment: no profile's is read meanwhile)
            attrs = ["profile"] if i in users else ["user", "user_id"]
            if self.relationship_set and i in profiles:
                owners = [u for u in users if u in usable]
                return ("read", owners[0], "profile") if owners else ("flush",)
            return ("read", i, _one(data, attrs, "attribute"))
        if kind in ("expire", "refresh"):
            persistent = [i for i in usable if sa.lifecycle(sa.handles[i]) == "persistent"]
            if not persistent:
                return ("expire_all",)
            return (kind, _one(data, persistent, "object"))
        if kind == "set":
            owners = [i for i in usable if i in users + profiles]
            i = _one(data, owners, "object")
            if i in profiles and self.user_moved_by_retort_only(i):
                # (setting it to the user SQLAlchemy still shows would be a change in retort
                # only)
                return ("flush",)
            attr, others = ("profile", profiles) if i in users else ("user", users)
            targets = [None, *[j for j in others if j in usable]]
            return ("set", i, attr, _one(data, targets, "value"))
        if kind == "set_fk":
            # (nor of a profile whose many-to-one only SQLAlchemy counts as changed: set to
            # the None it held, whose old value it did not load, and kept past a rollback; its
            # flush writes NULL over the key, retort's the key)
            keyed = [i for i in profiles if i in usable and not self.user_change_differs(i)]
            if not keyed:
                return ("flush",)
            i = _one(data, keyed, "object")
            return ("set_fk", i, _one(data, [None, 1, 2, 3], "key"))
        return (kind,)

    def pending_profile_moved(self, step: Step) -> bool:
        """Whether this step, a profile's user set to a user, left the profile transient in
        SQLAlchemy's session and pending, with that user, in retort's."""
        if step[0] != "set" or step[2] != "user" or step[3] is None:
            return False
        a, b = self.sa.handles[step[1]], self.rt.handles[step[1]]
        return (
            self.sa.lifecycle(a) == "transient"
            and self.rt.lifecycle(b) == "pending"
            and b.__dict__.get("user") is self.rt.handles[step[3]]
        )

    def lets_go_a_profile_sa_tracks_unloaded(self, step: Step) -> bool:
        """Whether this step sets a user's one-to-one that SQLAlchemy's side has not loaded
        (or a profile's many-to-one, whose backref sets the new user's one-to-one and clears
        the old user's), while SQLAlchemy's parent tracking names a parent of another profile
        of its session: that user, or any user where the profile's row may name this one (its
        user_id is not loaded, or holds this user's key), so that its flush may let it go."""
        if step[0] != "set":
            return False
        sa = self.sa
        if step[2] == "profile":
            value = None if step[3] is None else sa.handles[step[3]]
            changed = [(sa.handles[step[1]], value)]
        else:
            profile = sa.handles[step[1]]
            new = None if step[3] is None else sa.handles[step[3]]
            old = profile.__dict__.get("user")
            # (the old user's one-to-one is cleared of this profile: not the profile to let go)
            changed = [(new, profile), (None if old is new else old, profile)]
        return any(
            self.tracked_profile_let_go(user, value) for user, value in changed if user is not None
        )

    def profiles_let_go_naming_another_user(self, step: Step) -> list[Any]:
        """The profiles (on SQLAlchemy's side) this step takes out of a user's loaded one-to-one
        (set, or replaced through a profile's many-to-one), whose loaded user_id holds another
        key than the user's and whose loaded many-to-one names another user. Where SQLAlchemy's
        parent tracking records no parent for such a profile after the step (a many-to-one
        loaded, not set; or one flag for all its parents, which this removal clears), its flush
        clears the key of the profile the one-to-one lost; retort's keeps the key that names
        another user (see lets_go_a_profile_naming_another_user)."""
        if step[0] != "set" or (step[3] is None and step[2] == "user"):
            return []
        sa = self.sa
        if step[2] == "profile":
            user = sa.handles[step[1]]
            value = None if step[3] is None else sa.handles[step[3]]
        else:
            user, value = sa.handles[step[3]], sa.handles[step[1]]
        old = user.__dict__.get("profile")
        if old is None or old is value:
            return []
        ident = sa.api.inspect(user).identity
        d = old.__dict__
        named_elsewhere = (
            ident is not None
            and "user_id" in d
            and d["user_id"] != ident[0]
            and d.get("user") is not None
            and d.get("user") is not user
        )
        return [old] if named_elsewhere else []

    def lets_go_a_profile_naming_another_user(self, let_go: list[Any]) -> bool:
        """Whether SQLAlchemy's parent tracking records no parent for one of `let_go`
        (profiles_let_go_naming_another_user, before the step) now."""
        impl = self.sa.User.profile.impl
        return any(not impl.hasparent(self.sa.api.inspect(p)) for p in let_go)

    def tracked_profile_let_go(self, user: Any, value: Any) -> bool:
        """(lets_go_a_profile_sa_tracks_unloaded) for SQLAlchemy's `user`, whose one-to-one
        is set to `value` (or cleared of it)."""
        sa = self.sa
        insp = sa.api.inspect(user)
        if "profile" not in insp.unloaded:
            return False
        key = None if insp.identity is None else insp.identity[0]

        def may_name_user(p: Any) -> bool:
            return key is not None and p.__dict__.get("user_id", key) == key

        def held_by_another(p: Any) -> bool:
            # (another user of the session holds it in its loaded one-to-one: its flush copies
            # that user's key into the profile, and this user's may clear it, in an order that
            # changes between runs, where the profile's row may name this user)
            return may_name_user(p) and any(
                o is not user and o.__dict__.get("profile") is p for o in list(sa.session)
            )

        return any(
            type(p).__name__ == "Profile"
            and p is not value
            and (
                any(
                    parent is not False and (parent.obj() is user or may_name_user(p))
                    for parent in sa.api.inspect(p).parents.values()
                )
                or held_by_another(p)
            )
            for p in list(sa.session)
        )

    def takes_back_a_profile_another_user_took(self, step: Step) -> bool:
        """Whether this step sets a user's one-to-one to the profile it holds (on retort's
        side), whose loaded many-to-one names another user."""
        if step[0] != "set" or step[2] != "profile" or step[3] is None:
            return False
        user, profile = self.rt.handles[step[1]], self.rt.handles[step[3]]
        if user.__dict__.get("profile") is not profile or "user" not in profile.__dict__:
            return False
        return profile.__dict__["user"] is not user

    def user_change_differs(self, i: int) -> bool:
        """Whether one library counts a change of profile `i`'s many-to-one and the other
        does not (test_differential.py: Drawer.parent_change_differs)."""
        return bool(
            self.sa.api.inspect(self.sa.handles[i]).attrs.user.history.has_changes()
            != self.rt.api.inspect(self.rt.handles[i]).attrs.user.history.has_changes()
        )

    def stale_key_sa_keeps(self) -> bool:
        """Whether a profile's many-to-one counts a change in retort and none in SQLAlchemy,
        whose user_id names another user than it holds: set back to the value SQLAlchemy's
        history holds as the one before its change, after a flush gave the profile the key of
        the user it held meanwhile while it was outside the session. SQLAlchemy's flush keeps
        that key; retort's, for which the value before is unknown once the flush gave the key
        (any value set since is a change), writes the key of the user it holds
        (test_relationships.py: test_improvement_a_many_to_one_read_then_set_back_after_a_
        flush_gave_its_key_clears_it)."""
        for i, profile in enumerate(self.sa.handles):
            if type(profile).__name__ != "Profile" or not self.user_change_differs(i):
                continue
            d = profile.__dict__
            if "user" not in d or "user_id" not in d:
                continue
            user = d["user"]
            key = None if user is None else self.sa.api.inspect(user).identity
            if d["user_id"] != (None if key is None else key[0]):
                return True
        return False

    def held_by_a_new_user(self, i: int) -> bool:
        """Whether handle `i` is a profile that the one-to-one of a user without a row holds
        (in SQLAlchemy's side)."""
        sa = self.sa
        profile = sa.handles[i]
        return type(profile).__name__ == "Profile" and any(
            type(u).__name__ == "User"
            and u.__dict__.get("profile") is profile
            and not sa.api.inspect(u).has_identity
            for u in sa.handles
        )

    def cascade_marked_a_profile_a_new_user_holds(self, step: Step) -> bool:
        """Whether SQLAlchemy's session holds marked deleted a profile other than the one this
        delete() names that a user without a row holds (held_by_a_new_user)."""
        deleted = self.sa.session.deleted
        return any(
            i != step[1] and obj in deleted and self.held_by_a_new_user(i)
            for i, obj in enumerate(self.sa.handles)
        )

    def step(self, step: Step) -> bool:
        """Run one step on both sides and compare; False where the program stops (after a
        documented improvement)."""
        if step[0] == "get" and self.sa.held_loaded(*step[1:]) != self.rt.held_loaded(*step[1:]):
            # retort loaded the object a one-to-one replaced at the assignment, SQLAlchemy
            # loads it in its flush: a get() answered from one identity map only would
            # autoflush in the other; flush both first
            if not self.step(("flush",)):
                return False
        if step[0] == "read" and self.loads_in_one_library_only(step[1], step[2]):
            # an object unchanged inside a rolled back SAVEPOINT: SQLAlchemy's rollback expired
            # it (an attribute event touched it inside, a value set again), retort's did not;
            # reading it loads, with an autoflush, in one library only (test_differential.py:
            # Lockstep.loads_in_one_library_only): flush both first
            if not self.step(("flush",)):
                return False
        self.program.append(repr(step))
        nested = bool(self.sa.nested)
        members = (self.sa.members(), self.rt.members())
        expired_in_sa_only = step[0] in (
            "read",
            "delete",
            "add",
            "set",
        ) and self.expired_in_sa_only(step[1])
        moved_by_retort_only = step[0] == "read" and self.user_moved_by_retort_only(step[1])
        loaded_by_sa_flush_only = any(
            map(self.columns_loaded_by_sa_flush_only, range(len(self.sa.handles)))
        )
        held_outside = self.users_held_outside() if step[0] == "set" else {}
        unnamed = self.profiles_held_unnamed() if step[0] == "set" else {}
        held = self.users_held_with_a_row() if step[0] == "set" else {}
        takes_back = self.takes_back_a_profile_another_user_took(step)
        tracked = self.lets_go_a_profile_sa_tracks_unloaded(step)
        named_elsewhere = self.profiles_let_go_naming_another_user(step)
        # (a commit expires them: see orphan_kept_by_sa_only)
        without_user = {
            k
            for k, a in enumerate(self.sa.handles)
            if "user" in a.__dict__ and a.__dict__["user"] is None
        }
        sa, rt = self.sa.attempt(step), self.rt.attempt(step)
        self.let_go_outside.update(
            k
            for k, user in held_outside.items()
            if self.sa.handles[k].__dict__.get("user") is not user
        )
        self.let_go_with_a_row.update(
            k for k, user in held.items() if self.sa.handles[k].__dict__.get("user") is not user
        )
        self.let_go_unnamed.update(
            self.sa.norm(profile)
            for k, profile in unnamed.items()
            if self.sa.handles[k].__dict__.get("profile") is not profile
        )
        if step[0] in ("flush", "commit") and sa.ok:
            self.let_go_with_a_row.clear()
        elif step[0] in ("rollback", "rollback_nested"):
            # a profile let go with a row the rollback undid: as one let go without a row,
            # SQLAlchemy's parent tracking remembers the loss, its flush deleting the profile
            # once inserted again and changed (test_harness_stops_where_a_flush_deletes_a_
            # profile_let_go_before_a_rollback_undid_its_row)
            self.let_go_outside.update(
                k
                for k in self.let_go_with_a_row
                if not self.sa.api.inspect(self.sa.handles[k]).has_identity
            )
        self.program[-1] += f"  -> {sa.value if sa.ok else 'raised ' + sa.value}"
        if not sa.ok and not type(sa.error).__module__.startswith(("sqlalchemy", "psycopg")):
            # an error of SQLAlchemy's own code (an AttributeError in its flush, seen after a
            # rollback): no oracle past this point
            return False
        if step[0] == "delete" and sa.ok and self.cascade_marked_a_profile_a_new_user_holds(step):
            # the delete cascade of a user reached its profile, which a user without a row
            # holds (given it since the last flush, kept past a rollback): SQLAlchemy's flush
            # that inserts that user cancels the delete (as for a delete() of the profile, which
            # the draw leaves out: SPEC, retort honours it)
            # (test_harness_stops_where_a_delete_cascade_marks_a_profile_a_new_user_holds)
            return False
        if step[0] == "delete" and sa.ok and rt.ok and self.marked_again_by_sa():
            # SQLAlchemy's delete cascade marked deleted again an object whose DELETE was
            # flushed (retort's passes it by); its flush or rollback then fails on it (a
            # refresh finds no row, or "is not persisted"): no oracle past this point
            # (test_sqlalchemy_bug_a_delete_cascade_marks_again_a_profile_whose_delete_was_
            # flushed)
            return False
        if any(_DELETE_SHORT.search(w) for w in self.sa.warned) or (
            sa.value == "FlushError" and "using NULL for primary key" in str(sa.error)
        ):
            # SQLAlchemy's flush sent a DELETE for a profile that never had a row: a pending
            # one its user's one-to-one lists as an orphan, having let it go while it was
            # outside the session; retort inserts it without the key (test_relationships.py:
            # test_a_profile_given_a_key_while_outside_the_session_and_let_go_is_inserted_
            # without_it). Where the profile never had a row at all, not even one a rollback
            # took, SQLAlchemy's DELETE has no key to name and its flush fails (FlushError)
            # (test_harness_stops_where_sqlalchemy_deletes_a_profile_that_never_had_a_row)
            # (Its warning counts the rows the DELETE matched: none, or fewer than its rows
            # where it deletes a profile with a row too: test_harness_stops_where_sqlalchemy_
            # deletes_a_rowless_profile_beside_one_with_a_row)
            return False
        if sa.ok and rt.ok and self.pending_profile_moved(step):
            # a pending profile given another user: SQLAlchemy's backref takes it from its
            # user's one-to-one before the new user counts as its parent, so its orphan check
            # expunges it (delete-orphan), and the new user's backref does not cascade; retort
            # moves it, as it moves a persistent one (test_differential.py: test_improvement_a_
            # pending_child_moved_between_pending_parents_stays)
            return False
        if tracked and sa.ok and rt.ok:
            # a user's one-to-one, not loaded, set: SQLAlchemy's flush loads the profile it
            # held to clear its key, but leaves it where its parent tracking still names the
            # user (the profile was given the user in this session); retort loads it at the
            # assignment and clears its key (test_relationships.py: test_improvement_a_one_to_
            # one_set_while_not_loaded_lets_go_a_profile_given_the_user_before)
            return False
        if sa.ok and rt.ok and self.lets_go_a_profile_naming_another_user(named_elsewhere):
            # a user's loaded one-to-one lets go a profile whose key and many-to-one name
            # another user (set by hand and flushed since the user took it): SQLAlchemy's parent
            # tracking records no parent for it (one flag for all parents, which the removal
            # clears even where the other user's one-to-one holds it), and its flush clears the
            # key;
            # retort's keeps it (test_relationships.py: test_improvement_a_profile_let_go_whose_
            # key_names_another_user_keeps_it)
            return False
        if takes_back and sa.ok and rt.ok:
            # a user's one-to-one set to the profile it still holds, which another user took
            # since (a one-to-one's move leaves the old owner's value, in both libraries):
            # retort's profile comes back to this user; SQLAlchemy's sees no change and leaves
            # the profile naming the other user (test_relationships.py: test_improvement_a_
            # one_to_one_set_to_the_profile_another_user_took_takes_it_back)
            return False
        if sa != rt:
            if moved_by_retort_only and sa.ok and rt.ok:
                # a profile a one-to-one let go while SQLAlchemy's had not loaded it: its flush
                # cleared the key, and its backref left the many-to-one naming the old user
                # (stale); retort's took the user away at the assignment (test_relationships.py:
                # test_improvement_a_profile_given_a_user_then_replaced_in_its_one_to_one_lets_
                # it_go)
                return False
            if expired_in_sa_only and sa.ok and rt.ok:
                # an object unchanged inside a rolled back SAVEPOINT (a value set again), which
                # SQLAlchemy's rollback expired and retort's did not: SQLAlchemy's read loads the
                # row, retort's answers what it held, which a key set by hand on the other side
                # since does not change (test_differential.py: the same improvement)
                return False
            if (
                not sa.ok
                and sa.value == "InvalidRequestError"
                and "cannot be refreshed - it's not" in str(sa.error)
                and rt.ok
            ):
                # SQLAlchemy's flush reached an object expired, then made transient by a
                # rollback of its INSERT (through a one-to-one that replaced it), which it
                # cannot refresh: the object the draw leaves alone (Lockstep.usable), met
                # through another
                return False
            if (
                sa.ok
                and rt.value == "InvalidRequestError"
                and "was expired before a rollback undid its INSERT" in str(rt.error)
                and loaded_by_sa_flush_only
            ):
                # such an object, drawn no more, reached by a cascade: SQLAlchemy's flush
                # inserts it with the values its earlier flush loaded, retort's refuses it
                return False
            if (
                sa.ok
                and rt.value == "IntegrityError"
                and re.search(r"profiles_user_id_(key|fkey)", str(rt.error)) is not None
                and self.orphan_deleted_by_sa_only(("persistent", "transient"))
            ):
                # SQLAlchemy's flush deletes, as an orphan its parent tracking remembers, a
                # profile that lost a user while outside the session (see orphan_deleted_by_
                # sa_only); retort's keeps it and writes the user_id set by hand since, which
                # another profile holds (or which names a user the flush deletes), and fails
                # (its rollback makes the profile transient, where its INSERT was in this
                # transaction) (test_harness_stops_where_sqlalchemy_deletes_a_profile_whose_
                # key_retort_writes, ..._naming_a_deleted_user)
                return False
            if (
                not sa.ok
                and sa.value == "IntegrityError"
                and "profiles_user_id_key" in str(sa.error)
                and rt.ok
            ):
                # SQLAlchemy's UPDATEs in key order give a user_id to one profile before the
                # other lets it go; retort's flush clears keys first
                return False
            self.fail(f"outcome of step {len(self.program) - 1}", sa, rt)
        if (
            not sa.ok
            and sa.value == "InvalidRequestError"
            and self.sa.members() - members[0]
            and not self.rt.members() - members[1]
        ):
            # SPEC §4: a save-update cascade refused an object on its way (its DELETE flushed);
            # SQLAlchemy's add() keeps what it attached before the error, retort's attaches
            # nothing (test_differential.py: the same improvement)
            return False
        if step[0] == "rollback_nested" and any(
            self.expired_in_rt_only(i) for i in range(len(self.rt.handles))
        ):
            # the other way round: an object whose row a flush inside the SAVEPOINT changed,
            # got again after that flush. SQLAlchemy's weak identity map had freed the
            # instance its flush wrote, and its get() loaded a new one, which its rollback
            # leaves loaded with the values the rollback undid (stale, until expired); retort's
            # get() found the instance its flush wrote, which its rollback expires, and reads
            # the row again (test_improvement_a_profile_a_savepoint_flush_changed_reads_its_
            # row_after_the_rollback)
            return False
        if step[0] in ("add", "set") and expired_in_sa_only:
            # add() of such an object: its save-update cascade follows the one-to-one retort's
            # holds (a profile outside the session, given it by the backref), SQLAlchemy's
            # expired object none; a set of its one-to-one to the profile it holds is no
            # change in retort, and SQLAlchemy's (the value before unknown) cascades to it
            # (test_improvement_a_user_unchanged_inside_a_rolled_back_savepoint_cascades_to_
            # what_it_held)
            return False
        if step[0] == "delete" and expired_in_sa_only:
            # the delete of an object SQLAlchemy's SAVEPOINT rollback expired and retort's did
            # not (set to its own value inside): its flush follows the one-to-one SQLAlchemy
            # loads anew and the one retort held (where a key set by hand on a profile since
            # names the user, SQLAlchemy's flush clears it, retort's DELETE fails on it)
            return False
        if (
            self.stale_key_to_insert()
            or self.replaced_profile_kept_by_retort_only()
            or self.stale_removal_to_flush()
        ):
            return False
        if step[0] == "set":
            self.relationship_set = True
            if self.claimed_twice(step) or self.stale_user_to_flush() or self.stale_key_sa_keeps():
                return False
        if self.claimed_twice_in_session() or self.claimed_against_its_many_to_one():
            return False
        elif step[0] == "set_fk":
            self.key_set = True
        if (
            self.orphan_deleted_by_sa_only()
            or self.inserted_again_reported_deleted_by_sa()
            or self.orphan_kept_by_sa_only(without_user)
            or self.expunged_by_sa_for_a_rowless_user()
        ):
            return False
        self.compare_lifecycles(f"step {len(self.program) - 1}")
        if not sa.ok:
            # (a failed flush: both roll back, as a caller recovering from it)
            self.program.append("rollback()")
            self.sa.attempt(("rollback",))
            self.rt.attempt(("rollback",))
            self.compare_rows(committed=True)
            self.relationship_set = self.key_set = False
            return True
        if step[0] in FLUSHING and (step[0] in ("flush", "commit", "rollback") or nested):
            self.compare_rows(committed=step[0] in ("commit", "rollback"))
            if step[0] in ("flush", "commit", "rollback"):
                self.relationship_set = self.key_set = False
        return True

    def loads_in_one_library_only(self, i: int, attr: str) -> bool:
        """Whether reading `attr` of handle `i` loads in one library only (expired in one, or
        the attribute unloaded in one), with changes waiting for a flush."""

        def loads(side: Side) -> bool:
            insp = side.api.inspect(side.handles[i])
            return bool(insp.expired) or attr in insp.unloaded

        pending = any(s.session.new or s.session.dirty or s.session.deleted for s in self.sides)
        return pending and loads(self.sa) != loads(self.rt)

    def expired_in_sa_only(self, i: int, sides: tuple[Side, Side] | None = None) -> bool:
        """Whether handle `i` is expired on one side (SQLAlchemy's, unless `sides` says which
        first) and not on the other."""
        one, other = sides or (self.sa, self.rt)
        return bool(one.api.inspect(one.handles[i]).expired) and not bool(
            other.api.inspect(other.handles[i]).expired
        )

    def expired_in_rt_only(self, i: int) -> bool:
        return self.expired_in_sa_only(i, sides=(self.rt, self.sa))

    @property
    def sides(self) -> tuple[Side, Side]:
        return (self.sa, self.rt)

    def marked_again_by_sa(self) -> bool:
        """Whether SQLAlchemy's session holds marked for deletion an object whose DELETE was
        flushed already."""
        return any(self.sa.api.inspect(o).was_deleted for o in self.sa.session.deleted)

    def lifecycles(self, i: int) -> list[str]:
        """Handle `i`'s lifecycle in SQLAlchemy's session and in retort's."""
        return [side.lifecycle(side.handles[i]) for side in self.sides]

    def user_moved_by_retort_only(self, i: int) -> bool:
        """Whether profile `i`'s many-to-one differs between the libraries: retort moved it
        when a one-to-one replaced the profile, SQLAlchemy's shows the old user until its
        flush (the event comes from that same attribute)."""

        def held(side: Side) -> Any:
            value = side.handles[i].__dict__.get("user", "unloaded")
            if value is None or isinstance(value, str):
                return value
            return next((k for k, h in enumerate(side.handles) if h is value), "not held")

        return held(self.sa) != held(self.rt)

    def stale_user_to_flush(self) -> bool:
        """Whether SQLAlchemy's flush would write a profile a one-to-one replaced otherwise
        than retort's. SQLAlchemy's backref leaves the replaced profile naming its user
        (retort's takes the user away); its flush clears the profile's key through that user's
        one-to-one where it lists the profile as replaced, as retort's does, but else:
        - it writes that user's key where the profile was given the user since the last flush
          (the user's one-to-one names another profile, whose INSERT would fail on the unique
          user_id: test_relationships.py, test_improvement_a_profile_given_a_user_then_
          replaced_in_its_one_to_one_lets_it_go);
        - it writes nothing where the user's one-to-one had another value before (a new user,
          or one given this profile since the last flush), and the row keeps the key it had.
        Retort writes what its objects say: no user. (Not one whose DELETE was flushed: no
        flush writes it, until a rollback brings it back; and SQLAlchemy's may hold the user
        or not, from one run to the next.)"""
        sa = self.sa
        for k, profile in enumerate(sa.handles):
            if type(profile).__name__ != "Profile" or not self.user_moved_by_retort_only(k):
                continue
            if sa.lifecycle(profile) == "deleted":
                continue
            user = profile.__dict__.get("user")
            if user is None:
                continue
            if any(u is not None for u in sa.api.inspect(profile).attrs.user.history.added):
                return True
            if not any(p is profile for p in sa.api.inspect(user).attrs.profile.history.deleted):
                return True
        return False

    def sa_session_objects(self, cls: str) -> list[Any]:
        """The handled objects of class `cls` in SQLAlchemy's session."""
        sa = self.sa
        return [o for o in sa.handles if type(o).__name__ == cls and o in sa.session]

    def stale_key_to_insert(self) -> bool:
        """Whether a new profile in the session holds a user whose key its user_id does not
        hold, with no change of `user` for a flush to sync: a flush recorded the change, then
        a rollback made the profile transient again (and a flush or a step set its user_id
        since). Retort inserts it with the user's key, SQLAlchemy with the user_id it holds
        (test_differential.py: Drawer.stale_key; test_relationships.py: test_improvement_an_
        object_added_again_after_a_rollback_keeps_its_parent)."""
        sa = self.sa
        for profile in self.sa_session_objects("Profile"):
            insp = sa.api.inspect(profile)
            user = profile.__dict__.get("user")
            if insp.has_identity or user is None or insp.attrs.user.history.added:
                continue
            # (the user's key: an expired user's __dict__ holds no id)
            ident = sa.api.inspect(user).identity
            key = ident[0] if ident else user.__dict__.get("id")
            if key != profile.__dict__.get("user_id"):
                return True
        return False

    def users_held_outside(self) -> dict[int, Any]:
        """The user each profile of SQLAlchemy's side without a row (outside its session, or
        pending: one let go then leaves the session as an orphan, and may be added again)
        holds, by handle."""
        sa = self.sa
        return {
            k: user
            for k, p in enumerate(sa.handles)
            if type(p).__name__ == "Profile"
            and not sa.api.inspect(p).has_identity
            and (user := p.__dict__.get("user")) is not None
        }

    def profiles_held_unnamed(self) -> dict[int, Any]:
        """The profile each user of SQLAlchemy's side without a row, outside its session,
        holds in its one-to-one while the profile's many-to-one names another value (the
        profile loaded again since the user took it: a commit wrote nothing of that), by the
        user's handle."""
        sa = self.sa
        return {
            k: profile
            for k, u in enumerate(sa.handles)
            if type(u).__name__ == "User"
            and u not in sa.session
            and not sa.api.inspect(u).has_identity
            and (profile := u.__dict__.get("profile")) is not None
            and profile.__dict__.get("user", u) is not u
            and any(h is profile for h in sa.handles)
        }

    def users_held_with_a_row(self) -> dict[int, Any]:
        """The user each profile of SQLAlchemy's side with a row holds, by handle."""
        sa = self.sa
        return {
            k: user
            for k, p in enumerate(sa.handles)
            if type(p).__name__ == "Profile"
            and sa.api.inspect(p).has_identity
            and (user := p.__dict__.get("user")) is not None
        }

    def orphan_deleted_by_sa_only(self, rt_lifecycles: tuple[str, ...] = ("persistent",)) -> bool:
        """Whether SQLAlchemy's flush deleted a profile that lost a user while it was outside
        the session, which retort's keeps. SQLAlchemy's parent tracking remembers that loss:
        its flush inserts the profile all the same, and deletes it as an orphan at a later
        flush that has a change of it to write; retort counts as an orphan a profile that lost
        its user in the session (or with a row), and keeps it. (Detached: the flush of a
        commit deleted it.) Likewise a profile with a row let go by a user outside the session
        that its many-to-one, loaded again, no longer named (let_go_unnamed: test_
        relationships.py: test_improvement_a_profile_a_user_outside_the_session_lets_go_after_
        a_commit_stays)."""
        return any(
            (k in self.let_go_outside or k in self.let_go_unnamed or self.held_outside_rowless(a))
            and self.sa.lifecycle(a) in ("deleted", "detached")
            and self.rt.lifecycle(b) in rt_lifecycles
            for k, (a, b) in enumerate(zip(self.sa.handles, self.rt.handles, strict=True))
        )

    def held_outside_rowless(self, profile: Any) -> bool:
        """Whether a user without a row, outside SQLAlchemy's session, holds `profile` in its
        one-to-one: SQLAlchemy's parent tracking compares the parents' identity keys, so that
        a removal by another user without a row after that user took it leaves the profile
        parentless, and its flush deletes it under delete-orphan; retort's keeps it (test_
        relationships.py: test_sqlalchemy_bug_a_profile_a_user_outside_takes_before_a_new_user_
        lets_go_is_deleted)."""
        sa = self.sa
        return any(
            type(u).__name__ == "User"
            and u.__dict__.get("profile") is profile
            and u not in sa.session
            and not sa.api.inspect(u).has_identity
            for u in sa.handles
        )

    def orphan_kept_by_sa_only(self, without_user: Set[int] = frozenset()) -> bool:
        """Whether, under delete-orphan, SQLAlchemy's session keeps persistent a profile
        whose user is None (or was, before the step: `without_user`, where a commit expired
        it since), which retort's deleted (detached, by a commit): one whose user was set to
        None while that user's one-to-one was not loaded. SQLAlchemy's backref then knows no
        old profile to take out, its parent tracking still counts the user as the profile's
        parent, and its flush writes NULL; retort loads the one-to-one at the assignment and
        deletes the orphan, as both do where it was loaded (test_relationships.py:
        test_improvement_a_profile_let_go_by_an_expired_user_is_deleted_as_an_orphan)."""
        if not self.sa.User.profile.property.cascade.delete_orphan:
            return False
        return any(
            type(a).__name__ == "Profile"
            and self.sa.lifecycle(a) == "persistent"
            and self.rt.lifecycle(b) in ("deleted", "detached")
            and (k in without_user or ("user" in a.__dict__ and a.__dict__["user"] is None))
            for k, (a, b) in enumerate(zip(self.sa.handles, self.rt.handles, strict=True))
        )

    def expunged_by_sa_for_a_rowless_user(self) -> bool:
        """Whether, under delete-orphan, SQLAlchemy's session expunged as an orphan a profile
        retort's holds pending, whose user has no row, while SQLAlchemy's parent tracking
        names no parent for it: another user without a row let it go (a one-to-one's move
        leaves the old owner's value; a backref replaced it there since). That tracking
        compares the users' identity keys, takes two users without a row for one, and
        forgets the profile's user (a SQLAlchemy bug: as test_relationships.py's
        test_a_profile_a_new_user_lets_go_after_a_user_outside_took_it_loses_its_stale_key,
        at an assignment)."""
        if not self.sa.User.profile.property.cascade.delete_orphan:
            return False
        tracking = self.sa.User.profile.impl
        for a, b in zip(self.sa.handles, self.rt.handles, strict=True):
            if type(a).__name__ != "Profile" or self.rt.lifecycle(b) != "pending":
                continue
            user = a.__dict__.get("user")
            if (
                self.sa.lifecycle(a) == "transient"
                and user is not None
                and not self.sa.api.inspect(user).has_identity
                and not tracking.hasparent(self.sa.api.inspect(a))
            ):
                return True
        return False

    def inserted_again_reported_deleted_by_sa(self) -> bool:
        """Whether an object whose DELETE a flush ran, made transient by a rollback that undid
        its INSERT too, was brought back by a cascade and inserted again: SQLAlchemy's rollback
        left its deleted flag set, so that it reports itself deleted while its identity map
        holds it and its row exists; retort's is persistent (test_differential.py:
        test_improvement_an_object_inserted_again_after_a_rollback_is_persistent)."""
        return any(
            k in self.deleted_once
            and self.sa.lifecycle(a) == "deleted"
            and a in self.sa.session
            and self.rt.lifecycle(b) == "persistent"
            for k, (a, b) in enumerate(zip(self.sa.handles, self.rt.handles, strict=True))
        )

    def replaced_profile_kept_by_retort_only(self) -> bool:
        """Whether a user a rollback made transient holds, in retort's history of its
        one-to-one, a profile it replaced that SQLAlchemy's history never kept. SQLAlchemy
        loads the replaced value at each reading of the history (its flush's) and keeps a
        placeholder; retort loads it at the assignment and keeps it. So add() of the user
        brings that profile into retort's session, not into SQLAlchemy's, whose flush then
        fails on the placeholder (test_relationships.py: test_improvement_a_user_added_again_
        after_a_rollback_cascades_to_the_profile_it_let_go)."""
        for k, user in enumerate(self.sa.handles):
            if type(user).__name__ != "User" or self.sa.api.inspect(user).has_identity:
                continue
            theirs = self.sa.api.inspect(user).committed_state.get("profile")
            mine = self.rt.handles[k].__dict__.get("_retort_history", {}).get("profile")
            if theirs is PASSIVE_NO_RESULT and type(mine).__name__ == "Profile":
                return True
        return False

    def stale_removal_to_flush(self) -> bool:
        """Whether a user in SQLAlchemy's session without a row lists, as the profile its
        one-to-one held before a change, a profile with a row: a profile that named the user
        in a flush a rollback undid (the user's INSERT with it). SQLAlchemy's flush writes a
        NULL user_id over that profile's row, which names another user or none; retort's
        leaves it (test_relationships.py: test_improvement_a_user_inserted_again_after_a_
        rollback_leaves_the_profile_it_let_go). (Read from the committed state, which loads
        nothing.)"""
        sa = self.sa
        for user in self.sa_session_objects("User"):
            insp = sa.api.inspect(user)
            before = insp.committed_state.get("profile")
            if (
                not insp.has_identity
                and type(before).__name__ == "Profile"
                and before is not user.__dict__.get("profile")
                and sa.api.inspect(before).has_identity
            ):
                return True
        return False

    def claimed_twice(self, step: Step) -> bool:
        """Whether a user given a profile left another user's unflushed claim on it standing.

        SQLAlchemy's backref does not take a profile from the user that had it when another
        user's `profile` takes it (the event comes from that same attribute), so both users'
        one-to-one hold it, each with a change to flush. Its flush then writes the user_id of
        whichever of the two it visits last, in the order of a set of states, which changes from
        run to run. Retort writes the profile's own many-to-one, the last assignment (test_
        relationships.py: test_a_profile_two_users_claim_takes_the_key_of_its_last_owner)."""
        _, i, attr, j = step
        if attr != "profile" or j is None:
            return False
        sa, profile = self.sa, self.sa.handles[j]
        return any(
            k != i
            and type(user).__name__ == "User"
            and user.__dict__.get("profile") is profile
            and profile in sa.api.inspect(user).attrs.profile.history.added
            for k, user in enumerate(sa.handles)
        )

    def claimed_twice_in_session(self) -> bool:
        """Whether two users of SQLAlchemy's session hold one profile in their one-to-one,
        each with that change to flush (claimed_twice, where the first claim was made outside
        the session and the user attached since, or the second came from the profile's
        many-to-one): SQLAlchemy's flush writes either user's key, by the order of a set."""
        sa = self.sa
        claims: dict[int, int] = {}
        for user in sa.handles:
            if type(user).__name__ != "User" or user not in sa.session:
                continue
            profile = user.__dict__.get("profile")
            if profile is not None and profile in sa.api.inspect(user).attrs.profile.history.added:
                claims[id(profile)] = claims.get(id(profile), 0) + 1
        return any(n > 1 for n in claims.values())

    def claimed_against_its_many_to_one(self) -> bool:
        """Whether a user of SQLAlchemy's session holds a profile in its one-to-one with that
        change to flush, while the profile's loaded many-to-one names another value (set since
        while the user was unknown to it, as after a SAVEPOINT rollback expired the profile):
        SQLAlchemy's flush writes the user's key, retort's the profile's many-to-one, the last
        assignment (as for claimed_twice)."""
        sa = self.sa
        for user in sa.handles:
            if type(user).__name__ != "User" or user not in sa.session:
                continue
            profile = user.__dict__.get("profile")
            if (
                profile is not None
                and profile in sa.api.inspect(user).attrs.profile.history.added
                and "user" in profile.__dict__
                and profile.__dict__["user"] is not user
            ):
                return True
        return False

    def compare_lifecycles(self, where: str) -> None:
        sa = [self.sa.lifecycle(o) for o in self.sa.handles]
        rt = [self.rt.lifecycle(o) for o in self.rt.handles]
        if sa != rt:
            self.fail(f"object lifecycles after {where}", sa, rt)
        self.deleted_once.update(i for i, life in enumerate(sa) if life == "deleted")

    def compare_rows(self, committed: bool) -> None:
        sa_rows = self.sa.rows(self.admin, committed)
        rt_rows = self.rt.rows(self.admin, committed)
        if sa_rows != rt_rows:
            self.fail(
                "rows" + (" committed" if committed else " in the transaction"), sa_rows, rt_rows
            )


@dataclass
class Env:
    """The databases and connections a lockstep run uses."""

    dsn: str
    schema: str
    sa_schema: str
    engine: Engine
    admin: psycopg.Connection[Any]


@pytest.fixture
def env(
    dsn: str, schema: str, sa_schema: str, engine: Engine, admin_conn: psycopg.Connection[Any]
) -> Env:
    return Env(dsn, schema, sa_schema, engine, admin_conn)


@pytest.mark.parametrize("cascade", CASCADES)
def test_random_one_to_one_programs_agree_with_sqlalchemy(cascade: str, env: Env) -> None:
    admin_conn = env.admin
    sa_api = sqlalchemy_api(env.dsn, env.sa_schema, admin_conn)
    rt_api = Api("retort", env.engine, [], admin_conn)
    sides = [
        Side(api, name, *user_profile(api, cascade=cascade))
        for api, name in ((sa_api, env.sa_schema), (rt_api, env.schema))
    ]
    steps = _STEPS[_profile_name()]

    @_PROFILES[_profile_name()]
    @given(data=st.data())
    def program(data: st.DataObject) -> None:
        # no cyclic garbage collection while a program runs, so that what a weak identity map
        # holds changes at the same step in every run of it (test_differential.py)
        gc.disable()
        try:
            for side in sides:
                side.close()
                side.start(admin_conn)
            run = Lockstep(sides[0], sides[1], admin_conn)
            for _ in range(steps):
                if not run.step(run.draw(data)):
                    return
            if run.step(("commit",)):
                run.compare_rows(committed=True)
        finally:
            gc.enable()

    try:
        program()
    finally:
        for side in sides:
            side.close()
        sa_api.engine.dispose()


@contextmanager
def _stepped(env: Env, steps: list[Step], cascade: str = CASCADES[0]) -> Iterator[Lockstep]:
    """A lockstep run (save-update cascade, unless `cascade`) that has taken `steps`, each
    compared and none stopping the program, for a test to go on with; both sides are closed
    after it."""
    sa_api = sqlalchemy_api(env.dsn, env.sa_schema, env.admin)
    rt_api = Api("retort", env.engine, [], env.admin)
    pairs = ((sa_api, env.sa_schema), (rt_api, env.schema))
    sides = [Side(api, name, *user_profile(api, cascade=cascade)) for api, name in pairs]
    try:
        for side in sides:
            side.start(env.admin)
        run = Lockstep(sides[0], sides[1], env.admin)
        for step in steps:
            assert run.step(step)
        yield run
    finally:
        for side in sides:
            side.close()
        sa_api.engine.dispose()


# a user set to the value it has (None) inside a SAVEPOINT that is rolled back: SQLAlchemy's
# rollback expires it, retort's leaves it loaded
_SET_AGAIN_INSIDE_A_SAVEPOINT: list[Step] = [
    ("get", "User", 1),
    ("new", "User", 6, True),
    ("delete", 0),
    ("get", "Profile", 1),
    ("begin_nested",),
    ("set", 1, "profile", None),
    ("flush",),
    ("rollback_nested",),
]


def test_harness_a_read_that_loads_in_one_library_only_flushes_both_first(env: Env) -> None:
    # found by the nightly search: with new user 6 set again inside a rolled back SAVEPOINT,
    # reading its one-to-one loads, and autoflushes the profile's DELETE, in SQLAlchemy only.
    # The harness flushes both before that read
    steps = [*_SET_AGAIN_INSIDE_A_SAVEPOINT, ("delete", 2)]
    with _stepped(env, steps) as run:
        sides = run.sides
        assert [side.api.inspect(side.handles[1]).expired for side in sides] == [True, False]
        assert run.loads_in_one_library_only(1, "profile")
        assert run.step(("read", 1, "profile"))
        assert run.program[-2:] == ["('flush',)  -> None", "('read', 1, 'profile')  -> None"]
        assert [side.lifecycle(side.handles[2]) for side in sides] == ["deleted", "deleted"]


def test_improvement_a_user_unchanged_inside_a_rolled_back_savepoint_reads_what_it_held(
    env: Env,
) -> None:
    # found by the nightly search: profile 1 is given user 6's key by hand and flushed. Reading
    # user 6's one-to-one, SQLAlchemy's (expired) loads the profile; retort's answers the None
    # it held, as for any one-to-one loaded before a key set by hand on the other side. The
    # program stops there
    with _stepped(env, _SET_AGAIN_INSIDE_A_SAVEPOINT) as run:
        assert run.step(("set_fk", 2, 6))
        assert run.step(("flush",))
        assert run.expired_in_sa_only(1)
        assert not run.step(("read", 1, "profile"))
        assert run.program[-1] == "('read', 1, 'profile')  -> 2"
        assert run.rt.handles[1].profile is None


def test_improvement_a_profile_a_savepoint_flush_changed_reads_its_row_after_the_rollback(
    env: Env,
) -> None:
    # found by the nightly search: new profile 6 is given user 1, and a rollback makes it
    # transient again. Inside a SAVEPOINT it lets user 1 go, and the autoflush of get(Profile,
    # 1) writes NULL over profile 1's key (user 1's one-to-one replaced it). SQLAlchemy's
    # weak identity map had freed the instance its flush wrote: its get() loads a new one,
    # which its rollback of the SAVEPOINT leaves loaded with the NULL that rollback undid.
    # Retort's get() finds the instance its flush wrote, which the rollback expires, and its
    # read loads the row: user 1. The program stops at the rollback (a read, or a get() that
    # refreshes retort's, would differ)
    steps: list[Step] = [
        ("new", "Profile", 6, True),
        ("get", "User", 1),
        ("set", 0, "user", 1),
        ("rollback",),
        ("begin_nested",),
        ("set", 0, "user", None),
        ("get", "Profile", 1),
    ]
    with _stepped(env, steps) as run:
        assert not run.step(("rollback_nested",))
        assert run.expired_in_rt_only(2) and not run.expired_in_sa_only(2)
        assert run.sa.handles[2].__dict__["user_id"] is None
        assert run.sa.handles[2].user is None
        assert run.rt.handles[2].user is run.rt.handles[1]
        assert _rows_of_profile(env, run, 1) == [[(1, "p1", 1)]] * 2


def test_improvement_a_user_unchanged_inside_a_rolled_back_savepoint_deletes_what_it_held(
    env: Env,
) -> None:
    # found by the nightly search: as above, then user 6 is deleted. SQLAlchemy's flush loads
    # its one-to-one (the profile given its key by hand) and clears the profile's key;
    # retort's follows the None it held, and its DELETE fails on the profile's key (as
    # SQLAlchemy's does for a user whose one-to-one it loaded before the key was set). The
    # program stops at the delete
    steps = [*_SET_AGAIN_INSIDE_A_SAVEPOINT, ("set_fk", 2, 6), ("flush",)]
    with _stepped(env, steps) as run:
        assert run.expired_in_sa_only(1)
        assert not run.step(("delete", 1))
        assert run.program[-1] == "('delete', 1)  -> None"
        # (SQLAlchemy's flush is to load it; retort's holds None)
        assert "profile" not in run.sa.handles[1].__dict__
        assert run.rt.handles[1].__dict__["profile"] is None


def test_divergence_a_profile_only_sqlalchemys_flush_loaded_is_refused_when_a_cascade_adds_it(
    env: Env,
) -> None:
    # found by the nightly search: new profile 6 is inserted and expired, then given new user
    # 7, and the autoflush writes both. SQLAlchemy's flush loads the expired profile (to read
    # its key) and retort's does not need to; the rollback makes both new again, and the
    # profile's bio is known to SQLAlchemy only. Added through user 7's cascade, it is
    # inserted by SQLAlchemy and refused by retort (its value is unknown: it says to set it
    # again). The program stops there
    steps: list[Step] = [
        ("get", "Profile", 1),
        ("new", "Profile", 6, False),
        ("new", "User", 7, False),
        ("add", 1),
        ("get", "User", 1),
        ("expire_all",),
        ("set", 1, "user", 2),
        ("get", "User", 1),
        ("rollback",),
        ("add", 2),
    ]
    with _stepped(env, steps) as run:
        assert run.columns_loaded_by_sa_flush_only(1)
        assert not run.step(("flush",))
        assert run.program[-1] == "('flush',)  -> None"
        assert run.sa.lifecycle(run.sa.handles[1]) == "persistent"
        assert run.rt.lifecycle(run.rt.handles[1]) != "persistent"


def test_harness_draws_no_delete_of_a_profile_a_new_user_holds(env: Env) -> None:
    # found by the nightly search: profile 1 is given new user 6; the rollback makes the user
    # new again, holding the profile. Added again, the user's INSERT gives the profile its key
    # at the next flush, which cancels a delete() of the profile in SQLAlchemy (SPEC: retort
    # honours it). The draw leaves such a profile alone, as any given a parent since the
    # last flush
    steps: list[Step] = [
        ("get", "Profile", 1),
        ("new", "User", 6, False),
        ("set", 0, "user", 1),
        ("rollback",),
        ("add", 1),
    ]
    with _stepped(env, steps) as run:
        assert not run.relationship_set
        assert run.held_by_a_new_user(0)
        assert not run.held_by_a_new_user(1)


def test_harness_stops_where_sqlalchemy_deletes_a_rowless_profile_beside_one_with_a_row(
    env: Env,
) -> None:
    # found by the nightly search (delete-orphan): new profile 7, given new user 6, is
    # inserted, and a rollback makes both transient; user 6 lets it go, profile 1 takes user
    # 6, whose cascade attaches the user and, through its one-to-one's value before, profile
    # 7. User 2 is deleted (its cascade marks profile 2). SQLAlchemy's flush DELETEs profile 7
    # (that never had a row since) with profile 2, and warns that one row of two matched;
    # retort's inserts it without a user. The program stops there
    steps: list[Step] = [
        ("get", "Profile", 2),
        ("set_fk", 0, 2),
        ("commit",),
        ("new", "User", 6, False),
        ("new", "Profile", 7, True),
        ("set", 2, "user", 1),
        ("get", "User", 2),
        ("flush",),
        ("rollback",),
        ("get", "Profile", 1),
        ("set", 1, "profile", None),
        ("flush",),
        ("delete", 3),
        ("set", 4, "user", 1),
    ]
    with _stepped(env, steps, CASCADES[1]) as run:
        assert not run.step(("get", "User", 1))
        assert any(_DELETE_SHORT.search(w) for w in run.sa.warned)
        assert not any("0 were matched" in w for w in run.sa.warned)
        assert run.lifecycles(2) == ["pending", "persistent"]


def test_harness_stops_where_an_unloaded_one_to_one_lets_go_a_profile_another_user_holds(
    env: Env,
) -> None:
    # found by the nightly search (reported flaky): profile 7, inserted as user 3's, is taken
    # by new user 6 outside the session, and the commit writes nothing towards user 6 (the
    # profile's row still names user 3). User 6 is added, and user 3's one-to-one, not
    # loaded, set to None. SQLAlchemy's flush copies user 6's key into the profile and clears
    # it for user 3, in an order that changes between runs (user_id 6 or NULL); retort's
    # backref took user 3 away at the assignment, and its flush writes NULL. The program
    # stops at the assignment
    steps: list[Step] = [
        ("new", "User", 6, False),
        ("new", "Profile", 7, True),
        ("set_fk", 1, 3),
        ("flush",),
        ("set", 0, "profile", 1),
        ("commit",),
        ("get", "User", 3),
        ("add", 0),
    ]
    with _stepped(env, steps) as run:
        assert run.lets_go_a_profile_sa_tracks_unloaded(("set", 2, "profile", None))
        assert not run.lets_go_a_profile_sa_tracks_unloaded(("set", 0, "profile", None))
        assert not run.step(("set", 2, "profile", None))


def test_harness_stops_where_a_one_to_one_lets_go_a_profile_naming_another_user(
    env: Env,
) -> None:
    # found by the nightly search: new user 6, outside the session, takes profile 1 and is
    # added after a commit; the profile's user_id is set back to 1, its user read (user 1)
    # and flushed. User 6 lets the profile go: SQLAlchemy's flush clears its key, retort's
    # keeps it (test_relationships.py: test_improvement_a_profile_let_go_whose_key_names_
    # another_user_keeps_it). The program stops at the assignment
    steps: list[Step] = [
        ("new", "User", 6, False),
        ("get", "Profile", 1),
        ("set", 0, "profile", 1),
        ("commit",),
        ("add", 0),
        ("get", "User", 1),
        ("set_fk", 1, 1),
        ("read", 1, "user"),
        ("flush",),
    ]
    with _stepped(env, steps) as run:
        assert run.profiles_let_go_naming_another_user(("set", 0, "profile", None)) == [
            run.sa.handles[1]
        ]
        assert run.profiles_let_go_naming_another_user(("set", 2, "profile", None)) == []
        assert not run.step(("set", 0, "profile", None))
    # likewise where user 6's one-to-one is replaced through another profile's many-to-one,
    # while user 2, given profile 2 since, holds it: SQLAlchemy's parent tracking, one flag for
    # all parents, records no parent for profile 2 after the removal, and its flush clears the
    # key user 2's one-to-one holds
    steps = [
        ("new", "User", 6, False),
        ("get", "Profile", 2),
        ("set", 0, "profile", 1),
        ("commit",),
        ("add", 0),
        ("get", "User", 2),
        ("set_fk", 1, 2),
        ("get", "Profile", 1),
        ("flush",),
        ("set", 1, "user", 2),
    ]
    with _stepped(env, steps) as run:
        assert run.profiles_let_go_naming_another_user(("set", 3, "user", 0)) == [run.sa.handles[1]]
        assert not run.step(("set", 3, "user", 0))


def test_harness_stops_where_sqlalchemy_deletes_a_profile_whose_key_retort_writes(
    env: Env,
) -> None:
    # found by the nightly search (delete-orphan): new profile 6, outside the session, is given
    # user 2 and let go, then added and inserted without a user (both). Its user_id is set to
    # 1 by hand, which profile 1 holds: SQLAlchemy's flush deletes profile 6 as the orphan its
    # parent tracking remembers (test_relationships.py: test_improvement_a_profile_let_go_
    # outside_the_session_is_not_deleted_by_a_later_flush), retort's writes the key and the
    # database refuses it. The program stops at the flush
    steps: list[Step] = [
        ("new", "Profile", 6, False),
        ("get", "User", 2),
        ("set", 0, "user", 1),
        ("set", 0, "user", None),
        ("flush",),
        ("add", 0),
        ("flush",),
        ("set_fk", 0, 1),
    ]
    with _stepped(env, steps, "all, delete-orphan") as run:
        assert 0 in run.let_go_outside
        assert not run.step(("flush",))
        assert run.sa.lifecycle(run.sa.handles[0]) == "deleted"


def test_harness_stops_where_sqlalchemy_deletes_a_profile_naming_a_deleted_user(env: Env) -> None:
    # found by the nightly search (delete-orphan): new profile 6, outside the session, is given
    # user 2 and let go; user 2 is deleted, the profile added and its user_id set to 2 by
    # hand. SQLAlchemy's flush deletes the profile, the orphan its parent tracking remembers;
    # retort's writes the key, which names the user the same flush deletes (a foreign key
    # violation). The program stops at the flush
    steps: list[Step] = [
        ("get", "User", 2),
        ("new", "Profile", 6, False),
        ("set", 0, "profile", 1),
        ("set", 0, "profile", None),
        ("flush",),
        ("set_fk", 1, None),
        ("delete", 0),
        ("add", 1),
        ("get", "User", 1),
        ("set_fk", 1, 2),
    ]
    with _stepped(env, steps, "all, delete-orphan") as run:
        assert not run.step(("flush",))
        assert run.sa.lifecycle(run.sa.handles[1]) == "deleted"


def test_harness_knows_a_profile_a_rowless_user_outside_holds(env: Env) -> None:
    # (Lockstep.held_outside_rowless: where SQLAlchemy's flush deleted such a profile as an
    # orphan and retort's kept it, the program stops, as orphan_deleted_by_sa_only says; the
    # search reaches it only past a rollback, two new users' claims on one profile being a stop
    # of their own: test_relationships.py: test_sqlalchemy_bug_a_profile_a_user_outside_
    # takes_before_a_new_user_lets_go_is_deleted)
    steps: list[Step] = [
        ("get", "Profile", 1),
        ("new", "User", 6, False),
        ("set", 1, "profile", 0),
    ]
    with _stepped(env, steps, "all, delete-orphan") as run:
        assert run.held_outside_rowless(run.sa.handles[0])
        run.step(("set", 1, "profile", None))
        assert not run.held_outside_rowless(run.sa.handles[0])


def test_harness_stops_where_sqlalchemy_deletes_a_profile_a_user_outside_let_go_unnamed(
    env: Env,
) -> None:
    # found by the nightly search (delete-orphan): profile 2 is given to new user 6 outside the
    # session; the commit writes nothing of it and expires the profile, whose user, read
    # again, is None, and set to None. User 6 lets it go: SQLAlchemy's flush deletes it as an
    # orphan, retort's keeps it (test_relationships.py: test_improvement_a_profile_a_user_
    # outside_the_session_lets_go_after_a_commit_stays). The program stops at the flush
    steps: list[Step] = [
        ("get", "Profile", 2),
        ("new", "User", 6, False),
        ("set", 1, "profile", 0),
        ("commit",),
        ("read", 0, "user"),
        ("set", 0, "user", None),
        ("set", 1, "profile", None),
    ]
    with _stepped(env, steps, "all, delete-orphan") as run:
        assert run.let_go_unnamed == {0}
        assert not run.step(("flush",))
        assert [s.lifecycle(s.handles[0]) for s in (run.sa, run.rt)] == ["deleted", "persistent"]
    # without the commit, its many-to-one names the user it loses: both delete it
    with _stepped(env, steps[:3] + steps[5:], "all, delete-orphan") as run:
        assert run.let_go_unnamed == set()
        assert run.step(("flush",))
        assert [s.lifecycle(s.handles[0]) for s in (run.sa, run.rt)] == ["deleted", "deleted"]


def test_harness_stops_where_a_delete_cascade_marks_a_profile_a_new_user_holds(env: Env) -> None:
    # found by the nightly search (delete-orphan): new user 6, outside the session, takes
    # profile 1; the rollback expires the profile (its row still user 1's). User 1 is deleted:
    # its cascade loads its profile, profile 1, and marks it deleted. User 6 is added: the
    # flush inserts it and, profile 1 being in its one-to-one, SQLAlchemy's cancels the
    # profile's delete (it UPDATEs the key); retort's deletes it. The program stops at the
    # delete
    steps: list[Step] = [
        ("new", "User", 6, False),
        ("get", "Profile", 1),
        ("set", 0, "profile", 1),
        ("get", "User", 1),
        ("rollback",),
    ]
    with _stepped(env, steps, CASCADES[1]) as run:
        assert run.held_by_a_new_user(1)
        assert not run.step(("delete", 2))
        assert [side.handles[1] in side.session.deleted for side in (run.sa, run.rt)] == [
            True,
            True,
        ]
        for side in (run.sa, run.rt):
            side.session.add(side.handles[0])
            side.session.flush()
        assert run.lifecycles(1) == ["persistent", "deleted"]
    with _stepped(env, steps, CASCADES[0]) as run:  # (save-update: no cascade to the profile)
        assert run.step(("delete", 2))


def test_improvement_a_profile_a_one_to_one_let_go_reads_no_user(env: Env) -> None:
    # found by the nightly search: user 6 takes profile 1 from user 1, and the commit expires
    # them. User 6's one-to-one is set to None: retort loads the profile and takes its user
    # away; SQLAlchemy's backref has no loaded value to go by, and after its flush cleared the
    # profile's key its many-to-one still names user 6. The program stops at that read
    steps: list[Step] = [
        ("get", "User", 1),
        ("new", "User", 6, True),
        ("get", "Profile", 1),
        ("set", 1, "profile", 2),
        ("commit",),
        ("read", 2, "user"),
        ("set", 1, "profile", None),
        ("flush",),
    ]
    with _stepped(env, steps) as run:
        assert run.user_moved_by_retort_only(2)
        assert not run.step(("read", 2, "user"))
        assert run.program[-1] == "('read', 2, 'user')  -> 1"
        assert run.rt.handles[2].user is None


def test_improvement_a_profile_inserted_again_after_a_rollback_undid_its_delete_is_persistent(
    env: Env,
) -> None:
    # found by the nightly search: new profile 6, given new user 7, is inserted with it by a
    # released SAVEPOINT, then deleted by a flush; rollback() makes both new again. add() of
    # user 7 brings the profile back through its one-to-one, and the autoflush of a get()
    # inserts both. SQLAlchemy's rollback left the profile's deleted flag set: it reports it
    # deleted while its identity map holds it and its row exists; retort's is persistent.
    # The program stops there
    steps: list[Step] = [
        ("begin_nested",),
        ("new", "Profile", 6, False),
        ("new", "User", 7, False),
        ("set", 0, "user", 1),
        ("add", 0),
        ("commit_nested",),
        ("delete", 0),
        ("flush",),
        ("rollback",),
        ("add", 1),
    ]
    with _stepped(env, steps) as run:
        assert not run.inserted_again_reported_deleted_by_sa()
        assert not run.step(("get", "User", 1))
        assert run.program[-1] == "('get', 'User', 1)  -> 2"
        assert run.sa.lifecycle(run.sa.handles[0]) == "deleted"
        assert run.rt.lifecycle(run.rt.handles[0]) == "persistent"
        for side in run.sides:
            assert (6, 7) in [(r[0], r[2]) for r in side.rows(env.admin, False)[1]]


def test_harness_stops_where_a_profile_to_insert_holds_an_expired_user_its_key_does_not_name(
    env: Env,
) -> None:
    # found by the nightly search: new profile 6 is given user 1 and flushed; the rollback
    # makes it transient, still holding user 1, which it expires. Its user_id set to None by
    # hand, it is added: retort would insert it with user 1's key (which profile 1's row holds
    # again: IntegrityError), SQLAlchemy with NULL. The program stops at the add (the check
    # read the expired user's id from its __dict__, which holds none, and let it go on)
    steps: list[Step] = [
        ("get", "User", 1),
        ("new", "Profile", 6, True),
        ("set", 1, "user", 0),
        ("flush",),
        ("rollback",),
        ("set_fk", 1, None),
    ]
    with _stepped(env, steps) as run:
        assert run.sa.api.inspect(run.sa.handles[0]).expired
        assert not run.stale_key_to_insert()
        assert not run.step(("add", 1))
        assert run.stale_key_to_insert()
        assert run.program[-1] == "('add', 1)  -> None"


def test_the_draw_sets_no_key_where_only_sqlalchemy_counts_a_user_change(env: Env) -> None:
    # found by the nightly search: profile 6, inserted by an autoflush, is given user None
    # (which it has): a change to SQLAlchemy, which had not loaded it, none to retort. Made
    # transient by the rollback, it keeps that change in SQLAlchemy. Its user_id then set to 1
    # by hand, SQLAlchemy's flush writes NULL (the relationship's change), retort's 1, which
    # profile 1 holds (IntegrityError). The draw leaves that set out
    steps: list[Step] = [
        ("new", "Profile", 6, True),
        ("get", "User", 1),
        ("set", 0, "user", None),
        ("rollback",),
    ]
    with _stepped(env, steps) as run:
        assert run.user_change_differs(0)
        assert run.step(("set_fk", 0, 1))  # (what the draw leaves out)
        assert run.step(("add", 0))
        with pytest.raises(Divergence, match="outcome of step 6"):
            run.step(("flush",))


def _rows_of_profile(env: Env, run: Lockstep, key: int) -> list[list[tuple[Any, ...]]]:
    """Per library (SQLAlchemy's, then retort's), the row of profile `key` its transaction
    sees (none where it has none)."""
    return [[r for r in side.rows(env.admin, False)[1] if r[0] == key] for side in run.sides]


def test_harness_stops_where_a_one_to_one_takes_back_a_profile_another_user_took(
    env: Env,
) -> None:
    # found by the nightly search (under delete-orphan): user 1's profile 1 goes to new user 6,
    # and back to user 1, which leaves user 6's one-to-one holding it. User 6's one-to-one set
    # to profile 1 takes it back in retort; SQLAlchemy sees no change, and user 1 letting it
    # go then writes NULL (retort deleted it as user 1's orphan before: test_relationships.py)
    steps: list[Step] = [
        ("get", "User", 1),
        ("get", "Profile", 1),
        ("new", "User", 6, False),
        ("set", 1, "user", 2),
        ("flush",),
        ("set", 0, "profile", 1),
    ]
    with _stepped(env, steps) as run:
        take_back: Step = ("set", 2, "profile", 1)
        assert run.takes_back_a_profile_another_user_took(take_back)
        assert not run.takes_back_a_profile_another_user_took(("set", 0, "profile", 1))
        assert not run.step(take_back)
        assert run.rt.handles[1].user is run.rt.handles[2]
        assert run.sa.handles[1].user is run.sa.handles[0]


def test_harness_stops_where_a_commit_deletes_a_profile_an_expired_user_let_go(env: Env) -> None:
    # found by the nightly search (delete-orphan): profile 7, given user 2 and added to the
    # session by that cascade, is made transient by a rollback (user 2 expired), added again
    # and inserted as user 2's. Given user None, it is an orphan: retort's commit deletes it
    # (detached); SQLAlchemy's writes NULL and keeps it, and its commit expires the None the
    # harness reads. The program stops there
    steps: list[Step] = [
        ("get", "User", 2),
        ("new", "Profile", 7, False),
        ("set", 0, "profile", 1),
        ("rollback",),
        ("add", 1),
        ("flush",),
        ("set", 1, "user", None),
    ]
    with _stepped(env, steps, CASCADES[1]) as run:
        assert not run.orphan_kept_by_sa_only()
        assert not run.step(("commit",))
        assert run.lifecycles(1) == ["persistent", "detached"]
        assert not run.orphan_kept_by_sa_only()  # (its user expired in SQLAlchemy's)


def test_sqlalchemy_bug_a_profile_a_rowless_user_took_is_expunged_when_another_lets_go(
    env: Env,
) -> None:
    # found by the nightly search (delete-orphan): new user 8 takes new profile 6, and the
    # flush inserts them; user 7, outside the session, takes profile 6 (user 8's one-to-one
    # still holds it, in both libraries), and a rollback makes user 8 and profile 6 transient.
    # Profile 2 is given user 8: the cascade attaches user 8, and through the one-to-one's
    # value before, profile 6 and user 7; the backref replaces profile 6 in user 8's
    # one-to-one. SQLAlchemy's parent tracking takes users 7 and 8 (no row, no key) for one,
    # forgets profile 6's user, and expunges it as an orphan; retort keeps it pending, user
    # 7's. The program stops there
    steps: list[Step] = [
        ("new", "Profile", 6, False),
        ("get", "Profile", 2),
        ("new", "User", 7, False),
        ("new", "User", 8, True),
        ("set", 3, "profile", 0),
        ("flush",),
        ("set", 2, "profile", 0),
        ("rollback",),
    ]
    with _stepped(env, steps, CASCADES[1]) as run:
        assert not run.expunged_by_sa_for_a_rowless_user()
        assert not run.step(("set", 1, "user", 3))
        assert run.lifecycles(0) == ["transient", "pending"]
        assert run.sa.handles[0].user is run.sa.handles[2]
        assert run.expunged_by_sa_for_a_rowless_user()
    with _stepped(env, steps, CASCADES[0]) as run:  # (save-update: no orphan to expunge)
        assert run.step(("set", 1, "user", 3))
        assert not run.expunged_by_sa_for_a_rowless_user()


def test_harness_stops_where_sqlalchemy_keeps_a_profile_an_expired_user_let_go(env: Env) -> None:
    # found by the nightly search (delete-orphan): profile 6, given user 1 (whose profile 1
    # the commit deletes as an orphan), is added after the commit expired user 1, and
    # inserted as user 1's. Given user None, it is an orphan: retort's flush deletes it;
    # SQLAlchemy's writes NULL and keeps it. The program stops there
    steps: list[Step] = [
        ("new", "Profile", 6, False),
        ("get", "User", 1),
        ("set", 0, "user", 1),
        ("commit",),
        ("add", 0),
        ("flush",),
        ("set", 0, "user", None),
    ]
    with _stepped(env, steps, CASCADES[1]) as run:
        assert not run.orphan_kept_by_sa_only()
        assert not run.step(("flush",))
        assert run.orphan_kept_by_sa_only()
        assert run.lifecycles(0) == ["persistent", "deleted"]


def test_harness_stops_where_a_one_to_one_set_unloaded_lets_go_a_profile_sa_tracks(
    env: Env,
) -> None:
    # found by the nightly search: profile 6, given user 1 (profile 1 let go), is flushed;
    # user 1, expired, has its one-to-one set to None. SQLAlchemy's flush leaves profile 6's
    # key (its parent tracking still names user 1); retort's clears it. The program stops
    # at the set
    steps: list[Step] = [
        ("new", "Profile", 6, True),
        ("get", "User", 1),
        ("set", 0, "user", 1),
        ("flush",),
        ("expire", 1),
    ]
    with _stepped(env, steps) as run:
        let_go: Step = ("set", 1, "profile", None)
        assert run.lets_go_a_profile_sa_tracks_unloaded(let_go)
        assert not run.lets_go_a_profile_sa_tracks_unloaded(("set", 1, "profile", 0))
        assert not run.step(let_go)
        run.sa.session.flush()
        run.rt.session.flush()
        assert _rows_of_profile(env, run, 6) == [
            [(6, "n6", 1)],
            [(6, "n6", None)],
        ]


def test_harness_stops_where_a_one_to_one_set_unloaded_lets_go_a_profile_another_user_took(
    env: Env,
) -> None:
    # found by the nightly search: profile 1 is given new user 6, which is not added (the flush
    # writes nothing of it), and a commit expires it; user 6's one-to-one is set to it again.
    # User 1's one-to-one, not loaded, is set to None: SQLAlchemy's flush loads profile 1 and
    # leaves its key (its parent tracking names user 6); retort's clears it. The program stops
    # at the set
    steps: list[Step] = [
        ("get", "User", 1),
        ("get", "Profile", 1),
        ("new", "User", 6, False),
        ("set", 2, "profile", 1),
        ("commit",),
        ("set", 2, "profile", 1),
    ]
    with _stepped(env, steps) as run:
        let_go: Step = ("set", 0, "profile", None)
        assert run.lets_go_a_profile_sa_tracks_unloaded(let_go)
        # (user 2's row is named by no profile)
        assert not run.lets_go_a_profile_sa_tracks_unloaded(("set", 2, "profile", None))
        assert not run.step(let_go)
        run.sa.session.flush()
        run.rt.session.flush()
        assert _rows_of_profile(env, run, 1) == [
            [(1, "p1", 1)],
            [(1, "p1", None)],
        ]


def test_harness_stops_where_sqlalchemy_deletes_a_profile_that_never_had_a_row(env: Env) -> None:
    # found by the nightly search (delete-orphan): new profile 6, not added, is given user 1;
    # the flush deletes profile 1 as the user's orphan and gives profile 6 the key in memory.
    # User 1 is deleted, and lets profile 6 go, which is then added: SQLAlchemy's flush lists
    # it as an orphan to delete and fails, having no key for the DELETE; retort's inserts it
    # without the key, and deletes the user. The program stops there
    steps: list[Step] = [
        ("get", "User", 1),
        ("commit",),
        ("new", "Profile", 6, False),
        ("set", 1, "user", 0),
        ("flush",),
        ("get", "User", 1),
        ("delete", 0),
        ("set", 1, "user", None),
        ("add", 1),
    ]
    with _stepped(env, steps, CASCADES[1]) as run:
        assert not run.step(("flush",))
        assert run.program[-1].endswith("-> raised FlushError")
        run.rt.session.commit()
        rows = run.rt.rows(env.admin, False)
        assert [u for u in rows[0] if u[0] == 1] == [] and (6, "n6", None) in rows[1]


def test_harness_stops_where_sqlalchemy_keeps_a_key_a_flush_gave_a_profile_outside(
    env: Env,
) -> None:
    # found by the nightly search: profile 6, inserted and made transient again by a rollback,
    # holds its many-to-one loaded as None. Given user 1, it gets user 1's key from the commit
    # (outside the session). Set back to None and added: SQLAlchemy's history compares with
    # that None, sees no change, and inserts the key; for retort the value before is unknown
    # once the flush gave the key, so None is a change, and it inserts NULL. The program stops
    # at the set
    steps: list[Step] = [
        ("new", "Profile", 6, True),
        ("set", 0, "user", None),
        ("get", "User", 1),
        ("rollback",),
        ("set", 0, "user", 1),
        ("commit",),
    ]
    with _stepped(env, steps) as run:
        assert not run.stale_key_sa_keeps()
        assert not run.step(("set", 0, "user", None))
        assert run.stale_key_sa_keeps()
        for side in run.sides:
            side.session.add(side.handles[0])
            side.session.flush()
        assert _rows_of_profile(env, run, 6) == [
            [(6, "n6", 1)],
            [(6, "n6", None)],
        ]


def test_harness_stops_where_two_users_of_the_session_claim_one_profile(env: Env) -> None:
    # found by the nightly search (a FlakyFailure: SQLAlchemy's flush wrote either key from run
    # to run): new user 6, outside the session, takes profile 2, which a commit expires;
    # profile 2's many-to-one (its old value unknown) is set to new user 8, whose one-to-one
    # takes it by the backref, and user 6's keeps it (in both libraries). Once user 6 is
    # added both claims are to flush: the program stops there
    steps: list[Step] = [
        ("new", "User", 6, False),
        ("get", "Profile", 2),
        ("set", 0, "profile", 1),
        ("commit",),
        ("new", "User", 8, False),
        ("set", 1, "user", 2),
    ]
    with _stepped(env, steps) as run:
        assert not run.claimed_twice_in_session()
        assert not run.step(("add", 0))
        assert run.claimed_twice_in_session()


def test_harness_stops_where_a_users_claim_contradicts_the_profiles_many_to_one(
    env: Env,
) -> None:
    # found by the nightly search: profile 1 is given new user 6 inside a SAVEPOINT, whose
    # rollback expires the profile and makes user 6 transient, its one-to-one still holding
    # the profile. Added again, user 6 claims it; the profile's many-to-one is then set to
    # None (its old value unknown: no backref reaches user 6). SQLAlchemy's flush writes user
    # 6's key, retort's the None. The program stops at the set
    steps: list[Step] = [
        ("get", "Profile", 1),
        ("new", "User", 6, False),
        ("begin_nested",),
        ("set", 0, "user", 1),
        ("rollback_nested",),
        ("add", 1),
    ]
    with _stepped(env, steps) as run:
        assert not run.claimed_against_its_many_to_one()
        assert not run.step(("set", 0, "user", None))
        assert run.claimed_against_its_many_to_one()


def test_harness_stops_where_a_pending_profile_given_another_user_stays(env: Env) -> None:
    # found by the nightly search (delete-orphan): new profile 6, given user 1 (cascaded in),
    # is given user 2. SQLAlchemy's orphan check expunges it as it leaves user 1; retort
    # moves it to user 2. The program stops there
    steps: list[Step] = [
        ("get", "User", 1),
        ("set", 0, "profile", None),
        ("get", "User", 2),
        ("new", "Profile", 6, False),
        ("set", 0, "profile", 2),
    ]
    with _stepped(env, steps, CASCADES[1]) as run:
        move: Step = ("set", 2, "user", 1)
        assert not run.pending_profile_moved(move)
        assert not run.step(move)
        assert run.pending_profile_moved(move)


def test_the_draw_leaves_alone_an_object_whose_cascade_reaches_one_sqlalchemy_left_expired(
    env: Env,
) -> None:
    # found by the nightly search: user 9's INSERT (flushed by begin_nested) holds profile 7;
    # inside the SAVEPOINT profile 8 is given user 9, which lets profile 7 go. The rollback
    # makes all three transient. SQLAlchemy's SAVEPOINT rollback had expired user 9 (changed
    # inside it); retort's keeps its one-to-one, and the value before the change (profile 7),
    # which the save-update cascade of add(profile 8) followed: profile 7 was pending in
    # retort only. (Without the SAVEPOINT both follow it.) Neither profile is drawn: each
    # names user 9 in one library or the other
    steps: list[Step] = [
        ("new", "User", 9, True),
        ("new", "Profile", 7, False),
        ("new", "Profile", 8, False),
        ("set", 0, "profile", 1),
        ("begin_nested",),
        ("set", 2, "user", 0),
    ]
    with _stepped(env, steps) as run:
        assert run.usable(1) and run.usable(2)
        assert run.step(("rollback",))
        assert not any(run.usable(i) for i in range(3))


def test_harness_stops_where_a_profile_given_a_user_lets_go_one_sa_tracks_unloaded(
    env: Env,
) -> None:
    # found by the nightly search: profile 1 is given user 2 and flushed; user 2 is expired,
    # and new profile 6 (outside the session) is given user 2, whose one-to-one, not loaded,
    # takes it by the backref. SQLAlchemy's parent tracking still names user 2 as profile 1's
    # parent, and its flush leaves profile 1's key; retort's clears it, as where the one-to-
    # one itself is set (Lockstep.lets_go_a_profile_sa_tracks_unloaded). The program stops
    steps: list[Step] = [
        ("new", "Profile", 6, False),
        ("get", "Profile", 1),
        ("get", "User", 2),
        ("set", 1, "user", 2),
        ("flush",),
        ("expire", 2),
    ]
    with _stepped(env, steps) as run:
        assert run.lets_go_a_profile_sa_tracks_unloaded(("set", 0, "user", 2))
        assert not run.step(("set", 0, "user", 2))


def test_harness_stops_where_a_commit_deletes_a_profile_that_lost_a_user_outside(
    env: Env,
) -> None:
    # found by the nightly search: new profile 6, outside the session, is given user 1 and
    # let go, then added and inserted (by begin_nested). Its many-to-one set to None again is
    # a change of it to write, and the flush of the commit deletes it as an orphan in
    # SQLAlchemy only, which the commit detaches (Lockstep.orphan_deleted_by_sa_only)
    steps: list[Step] = [
        ("get", "Profile", 1),
        ("new", "Profile", 6, False),
        ("get", "User", 1),
        ("set", 1, "user", 2),
        ("set", 1, "user", None),
        ("add", 1),
        ("begin_nested",),
        ("set", 1, "user", None),
    ]
    with _stepped(env, steps, cascade="all, delete-orphan") as run:
        assert not run.orphan_deleted_by_sa_only()
        assert not run.step(("commit",))
        assert run.lifecycles(1) == ["detached", "persistent"]


def test_improvement_a_user_unchanged_inside_a_rolled_back_savepoint_cascades_to_what_it_held(
    env: Env,
) -> None:
    # found by the nightly search: user 1 lets profile 1 go, and new profile 6 (outside the
    # session) is given user 1, whose one-to-one takes it by the backref. Inside a SAVEPOINT
    # user 1's one-to-one is set to profile 6 again: SQLAlchemy counts user 1 changed (no
    # cascade: the value is the same) and its rollback expires it; retort's keeps it loaded.
    # add(user 1) then cascades to profile 6 in retort only; a set of its one-to-one to
    # profile 6 again, in SQLAlchemy only. The program stops at either
    steps: list[Step] = [
        ("get", "User", 1),
        ("set", 0, "profile", None),
        ("new", "Profile", 6, False),
        ("set", 1, "user", 0),
        ("begin_nested",),
        ("set", 0, "profile", 1),
        ("rollback_nested",),
    ]
    with _stepped(env, steps, cascade="all, delete-orphan") as run:
        assert run.expired_in_sa_only(0)
        assert not run.step(("add", 0))
        assert run.lifecycles(1) == ["transient", "pending"]
    # set to it again: a change, which cascades to it, in SQLAlchemy only
    with _stepped(env, steps) as run:
        assert not run.step(("set", 0, "profile", 1))
        assert run.lifecycles(1) == ["pending", "transient"]


def test_harness_stops_where_a_profile_let_go_by_its_user_clears_a_one_to_one_not_loaded(
    env: Env,
) -> None:
    # found by the nightly search: profile 6 (transient) holds user 1, whose one-to-one, set
    # to it inside a rolled-back SAVEPOINT, still holds it; profile 1 is given user 1 and
    # flushed, and user 1 expired. Profile 6's many-to-one set to None clears user 1's one-
    # to-one (not loaded) by the backref, in both. SQLAlchemy's flush loads the profile it
    # held, profile 1, whose parent tracking names user 1, and keeps its key; retort's clears
    # it (Lockstep.lets_go_a_profile_sa_tracks_unloaded). The program stops at the set
    steps: list[Step] = [
        ("get", "User", 1),
        ("set", 0, "profile", None),
        ("new", "Profile", 6, False),
        ("begin_nested",),
        ("get", "Profile", 1),
        ("set", 0, "profile", 1),
        ("rollback_nested",),
        ("set", 2, "user", 0),
        ("flush",),
        ("expire", 0),
    ]
    with _stepped(env, steps) as run:
        assert run.lets_go_a_profile_sa_tracks_unloaded(("set", 1, "user", None))
        assert not run.step(("set", 1, "user", None))


def test_harness_stops_where_a_flush_deletes_a_profile_let_go_before_a_rollback_undid_its_row(
    env: Env,
) -> None:
    # found by the nightly search (delete-orphan): profile 6, inserted, is given user 1 and
    # let go (an orphan, to be deleted); the rollback undoes its INSERT. Added again and
    # inserted, its many-to-one set to None again: SQLAlchemy's flush deletes it as an orphan
    # (its parent tracking remembers the loss), retort's keeps it, as for a profile let go
    # without a row (test_harness_stops_where_a_flush_deletes_a_profile_let_go_while_pending_
    # and_added_again)
    steps: list[Step] = [
        ("new", "Profile", 6, False),
        ("add", 0),
        ("get", "User", 1),
        ("set", 0, "user", 1),
        ("set", 0, "user", None),
        ("rollback",),
        ("add", 0),
        ("flush",),
        ("set", 0, "user", None),
    ]
    with _stepped(env, steps, cascade="all, delete-orphan") as run:
        assert 0 in run.let_go_outside
        assert not run.step(("flush",))
        assert run.lifecycles(0) == ["deleted", "persistent"]


@pytest.mark.parametrize("then", ["rollback", "expire_all"])
def test_sqlalchemy_bug_a_delete_cascade_marks_again_a_profile_whose_delete_was_flushed(
    env: Env, then: str
) -> None:
    # found by the nightly search (delete-orphan), twice: profile 6 (or 1), its DELETE flushed,
    # is reached by the delete cascade of its user, and SQLAlchemy's marks it deleted again
    # (retort's passes it by). SQLAlchemy's rollback then raises InvalidRequestError ("is not
    # persisted"); after expire_all(), its flush raises ObjectDeletedError (it refreshes the
    # profile, whose row is gone). Retort's succeed. The program stops at the delete
    steps: list[Step] = [
        ("new", "Profile", 6, False),
        ("get", "User", 2),
        ("set", 1, "profile", 0),
        ("flush",),
        ("delete", 0),
        ("get", "User", 1),
    ]
    with _stepped(env, steps, cascade="all, delete-orphan") as run:
        assert not run.marked_again_by_sa()
        assert not run.step(("delete", 1))
        assert run.marked_again_by_sa()
        assert not any(o is run.rt.handles[0] for o in run.rt.session.deleted)
        with pytest.raises(Exception, match=r"is not persisted|has been deleted"):
            if then == "expire_all":
                run.sa.session.expire_all()
                run.sa.session.flush()
            else:
                run.sa.session.rollback()
        if then == "expire_all":
            run.rt.session.expire_all()
            run.rt.session.flush()
        else:
            run.rt.session.rollback()


def test_improvement_an_add_after_a_rollback_refused_by_a_deleted_old_user_attaches_nothing(
    env: Env,
) -> None:
    # found by the nightly search: new profile 6, given user 1 and flushed, is made transient
    # by a rollback; user 1 is deleted (and flushed), and profile 6 given user 2. add() of
    # profile 6: the save-update cascade follows the history's user 1 and raises ("has been
    # deleted"), in both libraries; SQLAlchemy's add() keeps the profile it attached before
    # that, retort's attaches nothing (SPEC §4). (Until the autoflush's key copy into profile
    # 6, outside the session, kept that value for the cascade, retort's add() attached the
    # profile and user 2: test_relationships.py, test_add_cascades_to_the_user_a_profile_had_
    # before_a_flush_gave_it_another_key_outside)
    steps: list[Step] = [
        ("new", "Profile", 6, False),
        ("add", 0),
        ("get", "User", 1),
        ("set", 0, "user", 1),
        ("get", "User", 2),
        ("rollback",),
        ("delete", 1),
        ("set", 0, "user", 2),
        ("get", "User", 1),
    ]
    with _stepped(env, steps) as run:
        assert not run.step(("add", 0))  # (stopped: see Lockstep.step, SPEC §4)
        assert run.program[-1].endswith("raised InvalidRequestError")
        assert run.sa.handles[0] in run.sa.session
        assert run.rt.handles[0] not in run.rt.session


def test_harness_stops_where_a_flush_deletes_a_profile_let_go_while_pending_and_added_again(
    env: Env,
) -> None:
    # found by the nightly search (delete-orphan): pending profile 6, let go by user 1, leaves
    # the session as an orphan (both); added again, it is inserted. Its many-to-one set to
    # None again is a change of it to write, and SQLAlchemy's flush deletes it as an orphan
    # (its parent tracking remembers the loss); retort's add() forgot it, and keeps it. As for
    # a profile let go while outside the session (Lockstep.orphan_deleted_by_sa_only)
    steps: list[Step] = [
        ("get", "User", 1),
        ("set", 0, "profile", None),
        ("new", "Profile", 6, False),
        ("set", 0, "profile", 1),
        ("new", "Profile", 7, False),
        ("set", 0, "profile", None),
        ("add", 1),
        ("flush",),
        ("delete", 0),
        ("set", 1, "user", None),
    ]
    with _stepped(env, steps, cascade="all, delete-orphan") as run:
        assert 1 in run.let_go_outside
        assert not run.step(("flush",))
        assert run.lifecycles(1) == ["deleted", "persistent"]
