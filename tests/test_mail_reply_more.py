"""Reply extraction, second round: signatures without "-- ", list footers, more quote-header
languages and the HTML quotation structures of Hotmail, Windows Mail and Outlook 2003."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.mail.parse import parse_message
from mailgate.mail.reply import extract_reply

FIXTURES = Path(__file__).parent / "fixtures" / "mail"


@pytest.mark.parametrize(
    ("name", "reply"),
    [
        ("reply_hotmail_hr.eml", "It still drops after exactly 60 minutes, even on the new router."),
        ("reply_windows_mail.eml", "Den skriver nå, men bare i svart-hvitt."),
        ("reply_outlook2003_html.eml", "Dysk T: nadal jest niedostępny."),
    ],
)
def test_html_only_replies_are_cut_where_their_client_marked_the_history(name: str, reply: str) -> None:
    mail = parse_message((FIXTURES / name).read_bytes())
    assert mail.reply_text == reply
    assert not mail.errors


OLD = "\n> Could you restart the router?\n"


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("The printer works now.\n\nThanks,\nBob", "The printer works now."),
        ("Fixed, see attached.\n\n-Bob", "Fixed, see attached."),
        (
            "Please call me.\n\nJohn Smith\nIT Manager, Acme Ltd\n+1 555 123 4567\nwww.acme.example",
            "Please call me.",
        ),
        ("Done.\n\nMit freundlichen Grüßen\nJürgen Müller", "Done."),
        ("Ok.\n\nSent from my Huawei phone", "Ok."),
        ("Kiitos!\n\nLähetetty iPhonesta", "Kiitos!"),
        (
            "Answer here.\n\n_______________________________________________\nusers mailing list\n"
            "users@lists.example.org\nhttps://lists.example.org/mailman/listinfo/users",
            "Answer here.",
        ),
        (
            'Answer.\n\nYou received this message because you are subscribed to the Google Groups "x" group.\n'
            "To unsubscribe from this group and stop receiving emails from it, send an email to x+unsubscribe@googlegroups.com.",
            "Answer.",
        ),
        # whole replies that are only a sign-off, and lists, stay as they are
        ("Thanks,\nBob", "Thanks,\nBob"),
        ("Hi\n- item one\n- item two", "Hi\n- item one\n- item two"),
        ("We need:\n\n- Bob", "We need:\n\n- Bob"),
    ],
)
def test_signatures_and_list_footers_without_a_dash_dash_line(text: str, reply: str) -> None:
    assert extract_reply(text) == reply


@pytest.mark.parametrize(
    ("language", "header"),
    [
        (
            "da",
            "-----Oprindelig meddelelse-----\nFra: Support <s@x.example>\nSendt: 15. januar 2024 10:23\nTil: Bo\nEmne: SUP-1",
        ),
        (
            "no",
            "-----Opprinnelig melding-----\nFra: Support <s@x.example>\nSendt: 15. januar 2024 10:23\nTil: Ola\nEmne: SUP-1",
        ),
        (
            "fi",
            "Lähettäjä: Support <s@x.example>\nLähetetty: maanantai 15. tammikuuta 2024 10.23\nVastaanottaja: Matti\nAihe: SUP-1",
        ),
        ("pl", "W dniu 15.01.2024 o 10:23, Support <s@x.example> napisał:" + OLD),
        ("cs", "Dne 15. 1. 2024 10:23 Support <s@x.example> napsal(a):" + OLD),
        ("ru", "15 янв. 2024 г., в 10:23, Support <s@x.example> написал(а):" + OLD),
        (
            "ru-outlook",
            "От: Support <s@x.example>\nОтправлено: 15 января 2024 г. 10:23\nКому: Иван\nТема: SUP-1",
        ),
        ("uk", "Від: Support <s@x.example>\nНадіслано: 15 січня 2024 р. 10:23\nКому: Іван\nТема: SUP-1"),
        (
            "tr",
            "Kimden: Support <s@x.example>\nGönderildi: 15 Ocak 2024 Pazartesi 10:23\nKime: Ali\nKonu: SUP-1",
        ),
        (
            "el",
            "Από: Support <s@x.example>\nΣτάλθηκε: Δευτέρα, 15 Ιανουαρίου 2024 10:23 πμ\nΠρος: Νίκος\nΘέμα: SUP-1",
        ),
        ("hu", "Feladó: Support <s@x.example>\nKüldve: 2024. január 15. 10:23\nCímzett: Péter\nTárgy: SUP-1"),
        ("hu-gmail", "Support <s@x.example> ezt írta (időpont: 2024. jan. 15., H, 10:23):" + OLD),
        ("ko", "2024년 1월 15일 (월) 오전 10:23, Support <s@x.example>님이 작성:" + OLD),
        (
            "ko-outlook",
            "보낸 사람: Support <s@x.example>\n보낸 날짜: 2024년 1월 15일 월요일 오전 10:23\n받는 사람: 김\n제목: SUP-1",
        ),
        ("he", "בתאריך יום ב׳, 15 בינו׳ 2024 ב-10:23 מאת Support <s@x.example>‏ כתב:" + OLD),
        ("he-outlook", "מאת: Support <s@x.example>\nנשלח: יום שני 15 ינואר 2024 10:23\nאל: דני\nנושא: SUP-1"),
        ("ar", "في الاثنين، 15 يناير 2024 10:23 ص Support <s@x.example> كتب:" + OLD),
        (
            "ar-outlook",
            "من: Support <s@x.example>\nمرسل: الاثنين، 15 يناير 2024 10:23 ص\nإلى: علي\nالموضوع: SUP-1",
        ),
    ],
)
def test_quote_headers_in_more_languages(language: str, header: str) -> None:
    # Outlook-style blocks are followed by the unquoted old mail; attributions by ">" lines.
    below = "" if header.endswith(OLD) else "\n\nCould you restart the router?\n"
    text = f"The new answer.\n\n{header}{below}"
    assert extract_reply(text) == "The new answer.", language


@pytest.mark.parametrize(
    "marker",
    [
        "---------- Videresendt meddelelse ----------",
        "-------- Пересланное сообщение --------",
        "---------- Wiadomość przekazana dalej ---------",
        "-------- Továbbított üzenet --------",
    ],
)
def test_forwarded_blocks_in_more_languages_are_kept(marker: str) -> None:
    text = f"See below.\n\n{marker}\nFrom: Vendor <v@x.example>\n\nThe licence expires on Friday.\n"
    assert "The licence expires on Friday." in extract_reply(text)


def test_a_bare_name_below_the_text_goes_only_when_it_is_the_senders() -> None:
    assert extract_reply("It works now.\n\nJane", "Jane Roe jane.roe@hotmail.com") == "It works now."
    assert extract_reply("Which city?\n\nBerlin", "Jane Roe jane.roe@hotmail.com") == "Which city?\n\nBerlin"


def test_an_outlook_forward_keeps_the_forwarded_mail() -> None:
    raw = (
        b"From: Agent Smith <smith@customer.example>\r\nTo: support@localhost\r\n"
        b"Subject: FW: Licence renewal\r\nMessage-ID: <fw-1@customer.example>\r\n\r\n"
        b"Please handle this.\r\n\r\n________________________________\r\nFrom: Vendor <v@vendor.example>\r\n"
        b"Sent: Monday, January 15, 2024 10:23 AM\r\nTo: Agent Smith\r\nSubject: Licence renewal\r\n\r\n"
        b"Your licence expires on Friday.\r\n"
    )
    mail = parse_message(raw)
    assert mail.reply_text.startswith("Please handle this.")
    assert "Your licence expires on Friday." in mail.reply_text
    reply = raw.replace(b"Subject: FW: Licence", b"Subject: RE: Licence")
    assert parse_message(reply).reply_text == "Please handle this."


def test_a_quote_header_in_an_unknown_wording_goes_when_quoted_lines_follow() -> None:
    text = "Done.\n\nAlice wrote on 15.01.2024 10:23:\n> Can you check the printer?\n"
    assert extract_reply(text) == "Done."
