"""Sign-in hardening: throttled failures, one message for unknown users and wrong passwords."""

import re

import pytest

from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def attempt(client, username, password):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR="192.0.2.10")


def test_unknown_user_and_wrong_password_get_the_same_answer(client):
    user = make_user(password="right-password-1")
    wrong = attempt(client, user.username, "nope").content.decode()
    unknown = attempt(client, "no-such-user", "nope").content.decode()
    assert "didn't match" in wrong and "didn't match" in unknown
    token = re.compile(r'name="csrfmiddlewaretoken" value="[^"]+"')
    assert token.sub("", wrong.replace(user.username, "X")) == token.sub("", unknown.replace("no-such-user", "X"))


@pytest.mark.parametrize("known", [True, False])
def test_repeated_failures_lock_out_even_the_right_password(client, settings, known):
    # Given a user (or a name that isn't one), failed attempts from one address up to the limit
    user = make_user(password="right-password-1")
    name = user.username if known else "ghost"
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert attempt(client, name, "wrong").status_code == 200
    assert attempt(client, name, "wrong").status_code == 429  # the failure that reaches the limit
    # Then the next attempt, even with the right password, is refused with the lock-out page
    locked = attempt(client, name, "right-password-1")
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.content.decode()
    assert "_auth_user_id" not in client.session


def test_success_resets_the_failure_count(client, settings):
    user = make_user(password="right-password-1")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt(client, user.username, "wrong")
    assert attempt(client, user.username, "right-password-1").status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt(client, user.username, "wrong")
    assert attempt(client, user.username, "right-password-1").status_code == 302
