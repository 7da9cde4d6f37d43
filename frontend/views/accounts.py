"""Password reset that says when the email could not be sent (Django's logs the failure and shows
"done" anyway)."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import PasswordResetForm
from django.core.mail import EmailMultiAlternatives
from django.http import HttpResponse
from django.template import loader

logger = logging.getLogger(__name__)

NO_EMAIL = (
    "This server sends no email (its EMAIL_URL setting is empty), so no reset link can be mailed. "
    "Ask an admin for a link to set your password: the People page gives one."
)


class MailingPasswordResetForm(PasswordResetForm):
    """The same email as Django's, sent without swallowing the error."""

    def send_mail(
        self,
        subject_template_name: str,
        email_template_name: str,
        context: dict[str, Any],
        from_email: str | None,
        to_email: str,
        html_email_template_name: str | None = None,
    ) -> None:
        subject = "".join(loader.render_to_string(subject_template_name, context).splitlines())
        body = loader.render_to_string(email_template_name, context)
        message = EmailMultiAlternatives(subject, body, from_email, [to_email])
        if html_email_template_name is not None:
            message.attach_alternative(loader.render_to_string(html_email_template_name, context), "text/html")
        message.send()


class PasswordResetView(auth_views.PasswordResetView):
    form_class = MailingPasswordResetForm
    template_name = "frontend/accounts/password_reset_form.html"

    def form_valid(self, form: Any) -> HttpResponse:
        if not settings.EMAIL_ENABLED:
            form.add_error(None, NO_EMAIL)
            return self.render_to_response(self.get_context_data(form=form), status=503)
        try:
            return super().form_valid(form)
        except Exception as exc:  # SMTP refused, DNS, timeout: say so instead of "sent"
            logger.exception("password reset email could not be sent")
            form.add_error(
                None,
                f"The email could not be sent ({type(exc).__name__}: {str(exc)[:120]}). Try again later, or ask "
                "an admin for a link to set your password (the People page gives one).",
            )
            return self.render_to_response(self.get_context_data(form=form), status=503)
