"""The patient pages' words (preferences, times offered), per language (the patient's own;
English when we do not know)."""

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
        "offer_title": "Choose a new time",
        "offer_intro": "These times are held for you until {until}. Choose one, then tap "
                       "“Book this time”.",
        "offer_book": "Book this time",
        "offer_times": "Free times",
        "offer_done_title": "Your appointment is booked",
        "waitlist_title": "An appointment is free",
        "waitlist_intro": "This time is held for you until {until}.",
        "waitlist_yes": "Yes, book it",
        "waitlist_no": "No thanks, keep me on the waiting list",
        "offer_booked": "You are booked for {when}.",
        "offer_over": "These times are no longer held",
        "offer_over_hint": "The clinic will contact you, or you can call us.",
        "offer_pick": "Please choose one of the times.",
        "offer_gone": "This link has expired",
        "offer_gone_hint": "These times were held for you for a limited time. Please call us to "
                           "find another time.",
        "offer_taken": "Sorry, that time was just taken. Here are the next free times.",
        "offer_noted": "Thank you. These times suit when you said you can come.",
        "offer_declined": "Thank you. You stay on the waiting list.",
        "can_come": "None of these times suit you?",
        "can_come_hint": "Tick when you can come, and we will look for other times.",
        "can_come_show": "Show other times",
        "can_come_pick": "Please tick at least one.",
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
        "offer_title": "Elija una nueva hora",
        "offer_intro": "Estas horas están reservadas para usted hasta el {until}. Elija una y "
                       "toque «Reservar esta hora».",
        "offer_book": "Reservar esta hora",
        "offer_times": "Horas libres",
        "offer_done_title": "Su cita está reservada",
        "waitlist_title": "Hay una cita libre",
        "waitlist_intro": "Esta hora está reservada para usted hasta el {until}.",
        "waitlist_yes": "Sí, reservarla",
        "waitlist_no": "No, gracias; sigo en la lista de espera",
        "offer_booked": "Su cita queda reservada para el {when}.",
        "offer_over": "Estas horas ya no están reservadas",
        "offer_over_hint": "La clínica se pondrá en contacto con usted, o puede llamarnos.",
        "offer_pick": "Elija una de las horas.",
        "offer_gone": "Este enlace ha caducado",
        "offer_gone_hint": "Estas horas estaban reservadas para usted por un tiempo limitado. "
                           "Llámenos para buscar otra hora.",
        "offer_taken": "Lo sentimos, esa hora acaba de ocuparse. Estas son las siguientes horas "
                       "libres.",
        "offer_noted": "Gracias. Estas horas se ajustan a cuándo nos dijo que puede venir.",
        "offer_declined": "Gracias. Sigue en la lista de espera.",
        "can_come": "¿No le viene bien ninguna de estas horas?",
        "can_come_hint": "Marque cuándo puede venir y buscaremos otras horas.",
        "can_come_show": "Ver otras horas",
        "can_come_pick": "Marque al menos una opción.",
    },
}
LANGUAGE_NAMES = {"en": "English", "es": "Español"}


def text_for(language: str | None) -> dict[str, str]:
    return TEXT.get(language or "en", TEXT["en"])
