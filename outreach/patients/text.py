"""The preference page's words, per language (the patient's own; English when we do not know)."""

from __future__ import annotations

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "Your message preferences",
        "intro": "Choose how {organization} may contact you. Changes apply to the next message.",
        "us": "we",
        "language": "Language",
        "channel": "How should we reach you first?",
        "channel_sms": "Text message",
        "channel_email": "Email",
        "channel_any": "No preference",
        "categories": "Which messages do you want?",
        "appointments": "Appointment confirmations and reminders",
        "surveys": "Short surveys about your visit",
        "campaigns": "Check-up reminders and greetings",
        "quiet": "Quiet hours",
        "quiet_hint": "No messages between these times (your local time). Leave empty for none.",
        "quiet_from": "From",
        "quiet_to": "Until",
        "save": "Save preferences",
        "saved": "Your preferences are saved.",
        "unchanged": "Nothing changed.",
        "stop": "To stop all text messages at once, reply STOP to any of our texts.",
        "expires": "This link works until {date}.",
        "error_quiet": "Please give both times for quiet hours, and make them different.",
        "error_form": "Something in the form was not valid. Please try again.",
        "expired": "This link has expired",
        "expired_hint": "Links to your preferences work for a limited time. The next message "
                        "we send you will have a new one, or call us to change your preferences.",
        "invalid": "This link is not valid",
        "invalid_hint": "Please open the link exactly as it appears in our message.",
        "off": "This page is not available",
        "off_hint": "Please call us to change how we contact you.",
    },
    "es": {
        "title": "Sus preferencias de mensajes",
        "intro": "Elija cómo puede contactarle {organization}. Los cambios se aplican al "
                 "próximo mensaje.",
        "us": "nuestro equipo",
        "language": "Idioma",
        "channel": "¿Cómo prefiere que le contactemos primero?",
        "channel_sms": "Mensaje de texto",
        "channel_email": "Correo electrónico",
        "channel_any": "Sin preferencia",
        "categories": "¿Qué mensajes desea recibir?",
        "appointments": "Confirmaciones y recordatorios de citas",
        "surveys": "Encuestas breves sobre su visita",
        "campaigns": "Recordatorios de chequeos y felicitaciones",
        "quiet": "Horario sin mensajes",
        "quiet_hint": "Ningún mensaje entre estas horas (su hora local). Déjelo vacío si no "
                      "desea ninguno.",
        "quiet_from": "Desde",
        "quiet_to": "Hasta",
        "save": "Guardar preferencias",
        "saved": "Sus preferencias se han guardado.",
        "unchanged": "No hubo cambios.",
        "stop": "Para dejar de recibir todos los mensajes de texto, responda STOP a cualquiera "
                "de nuestros mensajes.",
        "expires": "Este enlace funciona hasta el {date}.",
        "error_quiet": "Indique las dos horas del horario sin mensajes, y que sean distintas.",
        "error_form": "Algo en el formulario no era válido. Inténtelo de nuevo.",
        "expired": "Este enlace ha caducado",
        "expired_hint": "Los enlaces a sus preferencias funcionan por un tiempo limitado. El "
                        "próximo mensaje que le enviemos tendrá uno nuevo, o llámenos para "
                        "cambiar sus preferencias.",
        "invalid": "Este enlace no es válido",
        "invalid_hint": "Abra el enlace exactamente como aparece en nuestro mensaje.",
        "off": "Esta página no está disponible",
        "off_hint": "Llámenos para cambiar cómo le contactamos.",
    },
}
LANGUAGE_NAMES = {"en": "English", "es": "Español"}


def text_for(language: str | None) -> dict[str, str]:
    return TEXT.get(language or "en", TEXT["en"])
