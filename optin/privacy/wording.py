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
        "keep_withdrawn": "Einwilligung widerrufen: der Nachweis wird bis zum Ende der "
                          "Verjährungsfrist aufbewahrt (§§ 195, 199 BGB; Art. 17 Abs. 3 lit. e "
                          "DSGVO), nur zur Abwehr von Ansprüchen genutzt und am {date} minimiert.",
        "keep_minimized": "Minimiert am {date}: nur der Adress-Hash sowie Art und Zeitpunkt "
                          "der Ereignisse bleiben.",
        "purpose_default": "Newsletter „{name}“ per E-Mail",
        "none": "–",
        "notes": "Hinweise",
        # The signed checkpoint of a consent cycle (templates/pages/_proof_checkpoint.html).
        "cp_title": "Signierter Checkpoint",
        "cp_covered": "Die Ereignisse Nr. 1 bis Nr. {through} dieser Einwilligung sind von "
                      "Protokoll-Checkpoint {n} erfasst, außerhalb der Datenbank veröffentlicht "
                      "({file})",
        "cp_tsa": ", mit einem Zeitstempel einer RFC-3161-Zeitstempelstelle",
        "cp_signed_at": "Signiert:",
        "cp_later": "Spätere Ereignisse erfasst der nächste Checkpoint.",
        "cp_check": "Jeder kann ihn ohne diesen Dienst prüfen:",
        "cp_check_with": "mit der veröffentlichten Datei und dem JSON dieses Nachweises (der "
                         "Zeitstempel steht im JSON).",
        "cp_root": "Merkle-Wurzel ({n} Ketten)",
        "cp_leaf": "Kopf der Kette (Blatt {n})",
        "cp_path": "Merkle-Pfad",
        "cp_only_chain": "– (die einzige Kette)",
        "cp_statement": "Signierte Erklärung",
        "cp_signature": "Ed25519-Signatur",
        "cp_key": "Öffentlicher Schlüssel (ID {id})",
        "cp_none": "Noch kein veröffentlichter Checkpoint erfasst die Ereignisse dieser "
                   "Einwilligung (Checkpoints werden alle paar Minuten signiert).",
        # An imported consent (templates/pages/_proof_imported.html).
        "imp_title": "Importierte Einwilligung: Nachweise aus {source}",
        "imp_source_mailchimp": "Mailchimp",
        "imp_source_csv": "einer CSV-Datei",
        "imp_source_activecampaign": "ActiveCampaign",
        "imp_summary": "Nachweise importiert aus {source} am {date}: Anmeldung {signup}{signup_ip}, "
                       "bestätigt {confirm}{confirm_ip}. Diese Einwilligung wurde nicht von "
                       "diesem Dienst aufgezeichnet (hier kein Double-Opt-In); die Nachweise "
                       "sind so wiedergegeben, wie die Quelle sie lieferte.",
        "imp_not_given": "nicht angegeben",
        "imp_from": " von {ip}",
        "imp_imported": "Importiert",
        "imp_file": "Datei",
        "imp_row": "Datensatz {row} (Zeile {line})",
        "imp_file_sha": "SHA-256 der Datei",
        "imp_status": "Status in der Quelle",
        "imp_status_subscribed": "angemeldet (subscribed)",
        "imp_status_unsubscribed": "abgemeldet (unsubscribed)",
        "imp_status_cleaned": "bereinigt, unzustellbar (cleaned)",
        "imp_status_nonsubscribed": "nie angemeldet (nonsubscribed)",
        "imp_role_signup_time": "Zeitpunkt der Anmeldung",
        "imp_role_signup_ip": "IP-Adresse der Anmeldung",
        "imp_role_confirm_time": "Zeitpunkt der Bestätigung",
        "imp_role_confirm_ip": "IP-Adresse der Bestätigung",
        "imp_role_withdrawn_time": "Zeitpunkt des Widerrufs",
        "imp_role_consent_text": "Einwilligungstext",
        "imp_role_consent_text_version": "Version des Einwilligungstextes",
        "imp_role_source_url": "Quell-URL",
        "imp_read_as": "gelesen als",
        "imp_missing": "fehlt in der Quelle",
        "imp_redacted": "Die Nachweise wurden minimiert, als die Nachweispflicht endete.",
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
        "keep_withdrawn": "Consent withdrawn: proof kept until the limitation period ends "
                          "(§§ 195, 199 BGB; Art. 17(3)(e) GDPR), used only to defend claims, "
                          "and minimized on {date}.",
        "keep_minimized": "Minimized on {date}: only the keyed address hash and the kinds and "
                          "dates of events remain.",
        "purpose_default": "Newsletter “{name}” by email",
        "none": "–",
        "notes": "Notes",
        "cp_title": "Signed checkpoint",
        "cp_covered": "Events #1 to #{through} of this cycle are covered by ledger checkpoint "
                      "{n}, published outside the database ({file})",
        "cp_tsa": ", time-stamped by an RFC 3161 authority",
        "cp_signed_at": "Signed:",
        "cp_later": "Later events are covered by the next checkpoint.",
        "cp_check": "Anyone can check it without this service:",
        "cp_check_with": "with the published file and this proof's JSON (the time-stamp token is "
                         "in the JSON).",
        "cp_root": "Merkle root ({n} chains)",
        "cp_leaf": "Chain head (leaf {n})",
        "cp_path": "Merkle path",
        "cp_only_chain": "– (the only chain)",
        "cp_statement": "Signed statement",
        "cp_signature": "Ed25519 signature",
        "cp_key": "Public key (id {id})",
        "cp_none": "No published checkpoint covers this cycle's events yet (checkpoints are "
                   "signed every few minutes).",
        "imp_title": "Imported consent: evidence from {source}",
        "imp_source_mailchimp": "Mailchimp",
        "imp_source_csv": "a CSV file",
        "imp_source_activecampaign": "ActiveCampaign",
        "imp_summary": "Evidence imported from {source} on {date}: opt-in {signup}{signup_ip}, "
                       "confirmed {confirm}{confirm_ip}. This consent was not recorded by this "
                       "service (no double opt-in made here); the evidence is as the source gave "
                       "it.",
        "imp_not_given": "not given",
        "imp_from": " from {ip}",
        "imp_imported": "Imported",
        "imp_file": "File",
        "imp_row": "row {row} (line {line})",
        "imp_file_sha": "SHA-256 of the file",
        "imp_status": "Status in the source",
        "imp_status_subscribed": "subscribed",
        "imp_status_unsubscribed": "unsubscribed",
        "imp_status_cleaned": "cleaned (undeliverable)",
        "imp_status_nonsubscribed": "never subscribed (nonsubscribed)",
        "imp_role_signup_time": "signup time",
        "imp_role_signup_ip": "signup IP",
        "imp_role_confirm_time": "confirm time",
        "imp_role_confirm_ip": "confirm IP",
        "imp_role_withdrawn_time": "withdrawn time",
        "imp_role_consent_text": "consent text",
        "imp_role_consent_text_version": "consent text version",
        "imp_role_source_url": "source URL",
        "imp_read_as": "read as",
        "imp_missing": "missing in the source",
        "imp_redacted": "The evidence was minimized when the proof obligation lapsed.",
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
        "unsubscribe_link_requested": "neuer Abmeldelink angefordert",
        "unsubscribe_link_sent": "Abmeldelink versandt",
        "consent_imported": "Einwilligung importiert",
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
        "unsubscribe_link_requested": "new unsubscribe link requested",
        "unsubscribe_link_sent": "unsubscribe link sent",
        "consent_imported": "consent imported",
    },
}

#: Who or what recorded an event (its ``origin``), in the ledger table's channel column
#: (unknown ones are shown as they are).
CHANNELS: dict[ProofLocale, dict[str, str]] = {
    "de": {
        "form": "Formular", "link": "Webseite", "one_click": "Ein-Klick-Abmeldung",
        "worker": "System", "operator": "Betreiber", "activecampaign": "ActiveCampaign",
        "retention": "Löschfrist", "import": "Import", "backfill": "Abgleich",
    },
    "en": {
        "form": "signup form", "link": "web page", "one_click": "one-click unsubscribe",
        "worker": "system", "operator": "operator", "activecampaign": "ActiveCampaign",
        "retention": "retention", "import": "import", "backfill": "backfill",
    },
}

#: How a consent was withdrawn, said plainly after its time ("Withdrawn … via …"); the
#: channel's code name is what the JSON proof and the export keep.
WITHDRAWN_VIA: dict[ProofLocale, dict[str, str]] = {
    "de": {
        "link": "über die Abmeldeseite (Link in einer Mail)",
        "one_click": "über die Ein-Klick-Abmeldung im Mailprogramm (List-Unsubscribe, RFC 8058)",
        "operator": "durch den Betreiber (Löschung auf Verlangen, Art. 17 DSGVO)",
        "activecampaign": "in ActiveCampaign (Abmeldung oder Unzustellbarkeit dort)",
        "import": "im Quellsystem des Imports",
    },
    "en": {
        "link": "on the unsubscribe page (a link in a mail)",
        "one_click": "by the one-click unsubscribe of the mail client (List-Unsubscribe, RFC 8058)",
        "operator": "by the operator (erasure on request, Art. 17 GDPR)",
        "activecampaign": "in ActiveCampaign (unsubscribed or bounced there)",
        "import": "in the system the import came from",
    },
}

#: The plain-text proof for the terminal (``optin proof EMAIL --list SLUG``).
TEXT: dict[ProofLocale, dict[str, str]] = {
    "de": {
        "title": "Nachweis der Einwilligung (Double-Opt-In)",
        "title_imported": "Nachweis der Einwilligung (aus einem anderen System importierte "
                          "Nachweise)",
        "address": "Adresse: {address}  (Hash {hash})",
        "list": "Verteiler: {slug} ({name}), Verantwortlicher: {controller}",
        "generated": "Erstellt {at} von {by}",
        "ledger": "Protokoll: {verdict}",
        "ledger_ok": "geprüft, unverändert",
        "ledger_failed": "PRÜFUNG FEHLGESCHLAGEN",
        "cycle": "Einwilligung {n} (Abonnement {id}, Status {status})",
        "retention": "Aufbewahrung",
        "imported_by": "importiert von",
        "imported_from": "{operator} aus {file} (SHA-256 {sha}), Datensatz {row}",
        "missing": "fehlt in der Quelle",
        "consent_text": "Einwilligungstext",
        "text_bad": " (TEXT STIMMT NICHT MIT SEINEM HASH ÜBEREIN)",
        "signup": "Anmeldung #{seq}",
        "confirmed_mark": "  (BESTÄTIGT)",
        "source_url": "  Quell-URL",
        "shown_text": "  Einwilligungstext",
        "entered": "  eingegeben",
        "outcome": "  Ergebnis",
        "mail": "Bestätigungsmail",
        "for_signup": "  für Anmeldung #{seq}",
        "template": "  Vorlage",
        "subject": "  Betreff",
        "text_sha": "  SHA-256 des Textes",
        "confirmed": "bestätigt",
        "confirmed_signup": "  Anmeldung #{seq}",
        "withdrawn": "widerrufen",
        "via": "über",
        "erased": "gelöscht",
        "minimized": "minimiert",
        "events": "  Ereignisse:",
        "redacted": "  (minimiert)",
        "chain": "Protokoll",
        "chain_verdict": "{n} Ereignisse, {verdict}",
        "intact": "unverändert",
        "checkpoint": "signierter Checkpoint",
        "checkpoint_line": "#{n} vom {at} erfasst die Ereignisse #1..#{through} (Wurzel {root}, "
                           "Schlüssel {key})",
    },
    "en": {
        "title": "Proof of consent (double opt-in)",
        "title_imported": "Proof of consent (evidence imported from another system)",
        "address": "Address: {address}  (hash {hash})",
        "list": "List: {slug} ({name}), controller: {controller}",
        "generated": "Generated {at} by {by}",
        "ledger": "Ledger: {verdict}",
        "ledger_ok": "verified, intact",
        "ledger_failed": "VERIFICATION FAILED",
        "cycle": "Consent cycle {n} (subscription {id}, status {status})",
        "retention": "retention",
        "imported_by": "imported by",
        "imported_from": "{operator} from {file} (SHA-256 {sha}), row {row}",
        "missing": "missing in the source",
        "consent_text": "consent text",
        "text_bad": " (TEXT DOES NOT MATCH ITS HASH)",
        "signup": "signup #{seq}",
        "confirmed_mark": "  (CONFIRMED)",
        "source_url": "  source URL",
        "shown_text": "  consent text",
        "entered": "  entered",
        "outcome": "  outcome",
        "mail": "confirmation mail",
        "for_signup": "  for signup #{seq}",
        "template": "  template",
        "subject": "  subject",
        "text_sha": "  text sha256",
        "confirmed": "confirmed",
        "confirmed_signup": "  signup #{seq}",
        "withdrawn": "withdrawn",
        "via": "via",
        "erased": "erased",
        "minimized": "minimized",
        "events": "  events:",
        "redacted": "  (redacted)",
        "chain": "ledger",
        "chain_verdict": "{n} events, {verdict}",
        "intact": "intact",
        "checkpoint": "signed checkpoint",
        "checkpoint_line": "#{n} of {at} covers events #1..#{through} (root {root}, key {key})",
    },
}

#: The audit export's word on minimized records (``manifest.json``: ``minimized_note``).
MINIMIZED_NOTE: dict[ProofLocale, str] = {
    "de": "Diese Datensätze wurden minimiert, als die Nachweispflicht endete (Aufbewahrung bis "
          "zum Ende des Widerrufsjahres plus der Verjährungsfrist, §§ 195, 199 BGB; nie "
          "bestätigte Anmeldungen nach OPTIN_PENDING_RETENTION_DAYS Tagen): Adresse, Namen, "
          "Felder, IP-Adressen und User-Agents sind gelöscht (Art. 5 Abs. 1 lit. c und e, "
          "Art. 17 DSGVO), daher gibt es keinen Nachweis mehr zu drucken. Erhalten bleiben nur "
          "der Schlüssel-Hash der Adresse (HMAC-SHA256, für die Sperrliste und die Frage, ob "
          "diese Adresse je eingewilligt hat), Art und Zeitpunkt jedes Ereignisses und die "
          "Hash-Kette, deren Prüfung hier für jeden Datensatz angegeben ist.",
    "en": "These records were minimized when the proof obligation lapsed (kept until the end of "
          "the withdrawal year plus the limitation period, §§ 195, 199 BGB; signups never "
          "confirmed after OPTIN_PENDING_RETENTION_DAYS days): the address, names, fields, IP "
          "addresses and user agents are deleted (Art. 5(1)(c) and (e), Art. 17 GDPR), so there "
          "is no proof left to print. What remains is the keyed hash of the address "
          "(HMAC-SHA256, for suppression and to answer whether this address ever consented), "
          "the kind and time of each event, and the hash chain, whose verification is given "
          "here for each record.",
}
