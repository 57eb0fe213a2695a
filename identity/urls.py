"""``/oidc/``: OpenID Connect sign-in (identity/oidc.py). Redirect URI: ``/oidc/callback/``."""

from django.urls import path

from identity import oidc, views

urlpatterns = [
    path("authenticate/", oidc.AuthenticationRequestView.as_view(), name="oidc_authentication_init"),
    path("callback/", oidc.AuthenticationCallbackView.as_view(), name="oidc_authentication_callback"),
]

# Included at /account/mfa/ by portal/urls.py (the list above is included at /oidc/).
mfa_urlpatterns = [
    path("", views.mfa_enrol, name="mfa-enrol"),
    path("verify/", views.mfa_verify, name="mfa-verify"),
]
