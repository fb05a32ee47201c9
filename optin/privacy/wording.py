"""What the proof of consent says, in German and English.

One dictionary per language with the same keys (tests/privacy/test_document.py
checks), so the document's layout lives once in ``templates/proof/document.html``.
German is the court's language; English is for everyone else.
"""

from __future__ import annotations

from typing import Literal

ProofLocale = Literal["de", "en"]

LABELS: dict[ProofLocale, dict[str, str]] = {
    "de": {
        "title": "Nachweis der Einwilligung (Double-Opt-In)",
        "controller": "Verantwortlicher",
        "address": "E-Mail-Adresse",
        "address_hash": "Adress-Hash (HMAC-SHA256)",
        "list": "Verteiler",
        "purpose": "Zweck",
        "privacy_today": "Datenschutzerklärung (heute)",
        "document_id": "Dokument-ID",
        "generated": "Erstellt",
        "generated_by": "von",
        "ledger_check": "Prüfung des Protokolls",
        "ledger_intact": "Unverändert: die Hashes aller Ereignisse und die Hash-Kette stimmen.",
        "ledger_failed": "FEHLGESCHLAGEN: siehe die unten genannten Befunde.",
        "checkpoint": "Checkpoint außerhalb der Datenbank",
        "checkpoint_none": "Kein signierter Checkpoint deckt diese Ereignisse ab.",
        "page": "Seite",
        "of": "von",
        "cycle": "Einwilligung {n} von {total}: Abonnement {id}, Status {status}",
        "status_pending": "ausstehend",
        "status_confirmed": "bestätigt",
        "status_unsubscribed": "abgemeldet",
        "status_minimized": "minimiert",
        "s_text": "1. Angezeigter Einwilligungstext",
        "text_version": "Version / Sprache",
        "text_sha": "SHA-256 des Textes",
        "text_sha_ok": "stimmt mit dem gespeicherten Text überein",
        "text_sha_bad": "stimmt NICHT mit dem gespeicherten Text überein",
        "text_since": "Text gültig seit",
        "text_none": "Kein Einwilligungstext aufgezeichnet.",
        "s_signups": "2. Anmeldungen",
        "signups_many": "{n} Anfragen, jede mit ihren eigenen Nachweisen",
        "signup": "Anmeldung",
        "signup_again": "Erneute Anmeldung",
        "ledger_event": "Protokollereignis",
        "signup_confirmed": "diese Anmeldung wurde bestätigt",
        "signup_not_confirmed": "nicht die bestätigte Anmeldung",
        "time": "Zeitpunkt",
        "ip": "IP-Adresse",
        "user_agent": "Browser (User-Agent)",
        "source_url": "Formular / Quell-URL",
        "source_from_referer": "aus dem Referer-Header der Anfrage (das Formular sandte keine)",
        "privacy_at_signup": "Datenschutzerklärung bei der Anmeldung",
        "not_recorded": "nicht aufgezeichnet",
        "shown_text": "Angezeigter Einwilligungstext",
        "entered": "Eingegeben",
        "entered_sha": "SHA-256 der eingegebenen Werte",
        "outcome": "Ergebnis",
        "mails_for_it": "Bestätigungsmails dafür (Message-ID)",
        "minimized_at": "Minimiert",
        "personal_removed": "personenbezogene Inhalte entfernt",
        "signups_none": "Keine Anmeldung aufgezeichnet.",
        "s_mail": "3. Bestätigungsmail, wie versandt",
        "sent": "Versandt",
        "for_signup": "Für die Anmeldung",
        "message_id": "Message-ID",
        "subject": "Betreff",
        "template": "Vorlage (SHA-256)",
        "template_same": "die heutigen Vorlagendateien haben denselben Hash",
        "template_changed": "Vorlage seither geändert; der Hash bezeichnet die versandte Fassung",
        "body_sha": "SHA-256 wie versandt (Text / HTML)",
        "copy_ok": "Die Kopie unten entspricht der Mail, wie sie versandt wurde:",
        "copy_ok_detail": "Betreff, Text und HTML ergeben den SHA-256, der beim Versand im Protokoll "
                          "festgehalten wurde.",
        "copy_bad": "Die Kopie unten entspricht NICHT den beim Versand festgehaltenen Hashes.",
        "removed": "Entfernt",
        "removed_token": "der persönliche Bestätigungs-Token (wer ihn hat, kann bestätigen), "
                         "als {marker}; sein SHA-256:",
        "removed_names": "die Namen, die die Mail nannte ({names}), als {markers}: bei der "
                         "Abmeldung gelöscht, weil der Nachweis sie nicht braucht "
                         "(Art. 17 DSGVO); die Kopie ohne sie wurde beim Versand ebenfalls gehasht.",
        "removed_bracket": "Ein „⟦“ der Mail steht als {marker}.",
        "copy_check": "Gegenprobe mit der Mail des Empfängers: {marker} durch den Token seines "
                      "Links ersetzen ergibt die versandten Hashes oben.",
        "copy_sha": "SHA-256 der Kopie (Betreff / Text / HTML)",
        "text_part": "Textteil der Mail",
        "html_part": "HTML-Teil: siehe Anhang",
        "no_copy": "Keine Kopie gespeichert (Mail vor Einführung der Kopien versandt); nur die "
                   "Hashes oben.",
        "rendered_again": "Aus der Vorlage neu erzeugt, nicht die versandte Mail (der Hash kann "
                          "nicht geprüft werden):",
        "mail_none": "Keine Bestätigungsmail aufgezeichnet.",
        "s_confirmation": "4. Bestätigung",
        "confirmed_signup": "Bestätigte Anmeldung",
        "never_confirmed": "Nie bestätigt.",
        "s_later": "5. Spätere Änderungen",
        "withdrawn": "Widerrufen",
        "via": "über",
        "erased": "Löschung verlangt",
        "s_ledger": "6. Protokoll (alle Ereignisse, hash-verkettet)",
        "col_seq": "Nr.",
        "col_time": "Zeitpunkt",
        "col_event": "Ereignis",
        "col_channel": "Kanal",
        "col_chain": "Ketten-Hash",
        "minimized": "minimiert",
        "verification": "Prüfung",
        "verified": "unverändert ({n} Ereignisse); Kopf der Kette:",
        "failed": "FEHLGESCHLAGEN",
        "annex": "Anhang: HTML-Teil der Bestätigungsmail {n} (Quelltext, wie gespeichert)",
        "retention": "Aufbewahrung",
        "keep_confirmed": "Aufbewahrt, solange das Abonnement besteht (die Einwilligung wird "
                          "genutzt); kein Enddatum.",
        "keep_pending": "Nie bestätigt: wird am {date} minimiert, falls nicht vorher bestätigt.",
        "keep_withdrawn_pending": "Vor der Bestätigung widerrufen: wird am {date} minimiert.",
        "keep_withdrawn": "Einwilligung widerrufen: der Nachweis wird bis {date} aufbewahrt "
                          "(Art. 17 Abs. 3 lit. e DSGVO) und nur zur Abwehr von Ansprüchen "
                          "genutzt, dann minimiert.",
        "keep_minimized": "Minimiert am {date}: nur der Adress-Hash sowie Art und Zeitpunkt "
                          "der Ereignisse bleiben.",
        "purpose_default": "Newsletter „{name}“ per E-Mail",
        "none": "–",
        "notes": "Hinweise",
    },
    "en": {
        "title": "Proof of consent (double opt-in)",
        "controller": "Controller",
        "address": "Email address",
        "address_hash": "Address hash (HMAC-SHA256)",
        "list": "List",
        "purpose": "Purpose",
        "privacy_today": "Privacy policy (today)",
        "document_id": "Document ID",
        "generated": "Generated",
        "generated_by": "by",
        "ledger_check": "Ledger verification",
        "ledger_intact": "Intact: every event's hash and the hash chain verify.",
        "ledger_failed": "FAILED: see the problems listed below.",
        "checkpoint": "Checkpoint outside the database",
        "checkpoint_none": "No signed checkpoint covers these events.",
        "page": "Page",
        "of": "of",
        "cycle": "Consent {n} of {total}: subscription {id}, status {status}",
        "status_pending": "pending",
        "status_confirmed": "confirmed",
        "status_unsubscribed": "unsubscribed",
        "status_minimized": "minimized",
        "s_text": "1. Consent text shown",
        "text_version": "Version / language",
        "text_sha": "SHA-256 of the text",
        "text_sha_ok": "matches the stored text",
        "text_sha_bad": "does NOT match the stored text",
        "text_since": "Text in use since",
        "text_none": "No consent text recorded.",
        "s_signups": "2. Signups",
        "signups_many": "{n} requests, each with its own evidence",
        "signup": "Signup",
        "signup_again": "Signed up again",
        "ledger_event": "ledger event",
        "signup_confirmed": "the signup confirmed",
        "signup_not_confirmed": "not the signup confirmed",
        "time": "Time",
        "ip": "IP address",
        "user_agent": "User agent",
        "source_url": "Form / source URL",
        "source_from_referer": "from the request's Referer header (the form sent none)",
        "privacy_at_signup": "Privacy policy at signup",
        "not_recorded": "not recorded",
        "shown_text": "Consent text shown",
        "entered": "Entered",
        "entered_sha": "SHA-256 of the values entered",
        "outcome": "Outcome",
        "mails_for_it": "Confirmation mails for it (Message-ID)",
        "minimized_at": "Minimized",
        "personal_removed": "personal content removed",
        "signups_none": "No signup event recorded.",
        "s_mail": "3. Confirmation mail as sent",
        "sent": "Sent",
        "for_signup": "For the signup",
        "message_id": "Message-ID",
        "subject": "Subject",
        "template": "Template (SHA-256)",
        "template_same": "the current template files hash the same",
        "template_changed": "template changed since; the hash identifies the version sent",
        "body_sha": "SHA-256 as sent (text / HTML)",
        "copy_ok": "The copy below matches the mail as sent:",
        "copy_ok_detail": "its subject, text and HTML hash to the SHA-256 recorded in the ledger "
                          "when the mail left.",
        "copy_bad": "The copy below does NOT match the hashes recorded when the mail left.",
        "removed": "Removed",
        "removed_token": "the personal confirmation token (whoever holds it can confirm), shown "
                         "as {marker}; its SHA-256:",
        "removed_names": "the names the mail quoted ({names}), shown as {markers}: deleted at "
                         "withdrawal, since the proof does not need them (Art. 17 GDPR); the copy "
                         "without them was hashed when the mail left, too.",
        "removed_bracket": "A “⟦” of the mail is shown as {marker}.",
        "copy_check": "To check against the recipient's mail: replace {marker} by the token of "
                      "their link, and the parts hash as sent (above).",
        "copy_sha": "SHA-256 of the copy (subject / text / HTML)",
        "text_part": "Text part of the mail",
        "html_part": "HTML part: see the annex",
        "no_copy": "No copy kept (a mail sent before copies were kept); only the hashes above.",
        "rendered_again": "Rendered again from the template, not the mail as sent (its hash "
                          "cannot be checked):",
        "mail_none": "No confirmation mail recorded.",
        "s_confirmation": "4. Confirmation",
        "confirmed_signup": "Confirmed the signup",
        "never_confirmed": "Never confirmed.",
        "s_later": "5. Later changes",
        "withdrawn": "Withdrawn",
        "via": "via",
        "erased": "Erasure requested",
        "s_ledger": "6. Ledger (all events, hash-chained)",
        "col_seq": "#",
        "col_time": "Time",
        "col_event": "Event",
        "col_channel": "Channel",
        "col_chain": "Chain hash",
        "minimized": "minimized",
        "verification": "Verification",
        "verified": "intact ({n} events); chain head:",
        "failed": "FAILED",
        "annex": "Annex: HTML part of confirmation mail {n} (source, as kept)",
        "retention": "Retention",
        "keep_confirmed": "Kept while the subscription is active (consent in use); no end date.",
        "keep_pending": "Never confirmed: minimized on {date} unless confirmed before.",
        "keep_withdrawn_pending": "Withdrawn before confirmation: minimized on {date}.",
        "keep_withdrawn": "Consent withdrawn: proof kept until {date} (Art. 17(3)(e) GDPR), "
                          "used only to defend claims, then minimized.",
        "keep_minimized": "Minimized on {date}: only the keyed address hash and the kinds and "
                          "dates of events remain.",
        "purpose_default": "Newsletter “{name}” by email",
        "none": "–",
        "notes": "Notes",
    },
}

LEGAL_NOTES: dict[ProofLocale, list[str]] = {
    "de": [
        "BGH, Urteil vom 10. Februar 2011, I ZR 164/09: der Werbende muss jede Einwilligung "
        "vollständig dokumentieren und sie jederzeit ausdrucken können.",
        "EDSA-Leitlinien 05/2020, Rn. 108: die Aufzeichnungen zeigen, wie und wann die "
        "Einwilligung erteilt wurde und welche Informationen dabei gegeben wurden.",
        "Zeitangaben in der genannten Zeitzone, daneben in UTC. Jedes Ereignis ist je Abonnement "
        "hash-verkettet (SHA-256); das Prüfergebnis umfasst alle aufgeführten Ereignisse.",
        "Die Body-Hashes sind SHA-256 der erzeugten Text- und HTML-Teile (UTF-8, Zeilenende LF; "
        "beim Mailtransport CRLF). Der Vorlagen-Hash umfasst die Quellen von Betreff, Text und "
        "HTML und die Layouts, die sie erweitern.",
    ],
    "en": [
        "BGH, judgment of 10 Feb 2011, I ZR 164/09: the advertiser must document each consent "
        "fully and be able to print it at any time.",
        "EDPB Guidelines 05/2020, §108: records show how and when consent was given and what "
        "information was presented.",
        "Times in the time zone named, with UTC beside them. Each event is hash-chained (SHA-256) "
        "per subscription; the verification result covers every event listed.",
        "Mail body hashes are SHA-256 of the rendered text and HTML parts (UTF-8, LF line "
        "endings; mail transport carries them as CRLF). The template hash covers the subject, "
        "text and HTML template sources and the layouts they extend.",
    ],
}

#: Event kinds as the reader understands them (unknown kinds are shown as they are).
EVENTS: dict[ProofLocale, dict[str, str]] = {
    "de": {
        "signup_requested": "Anmeldung", "signup_repeated": "erneute Anmeldung",
        "confirmation_resend_requested": "neuer Link angefordert",
        "confirmation_sent": "Bestätigungsmail versandt", "confirmed": "bestätigt",
        "welcome_sent": "Willkommensmail versandt", "goodbye_sent": "Abschiedsmail versandt",
        "unsubscribed": "abgemeldet", "complaint": "Beschwerde", "bounced": "unzustellbar",
        "erased": "gelöscht (Art. 17)", "proof_printed": "Nachweis erstellt",
        "accessed": "Auskunft erteilt", "synced": "an ActiveCampaign übertragen",
        "sync_skipped": "Übertragung übersprungen", "minimized": "minimiert",
    },
    "en": {
        "signup_requested": "signup", "signup_repeated": "signed up again",
        "confirmation_resend_requested": "new link requested",
        "confirmation_sent": "confirmation mail sent", "confirmed": "confirmed",
        "welcome_sent": "welcome mail sent", "goodbye_sent": "goodbye mail sent",
        "unsubscribed": "unsubscribed", "complaint": "complaint", "bounced": "bounced",
        "erased": "erased (Art. 17)", "proof_printed": "proof printed",
        "accessed": "access request answered", "synced": "synced to ActiveCampaign",
        "sync_skipped": "sync skipped", "minimized": "minimized",
    },
}
