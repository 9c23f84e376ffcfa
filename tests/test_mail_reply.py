"""Reply extraction on what real clients send: the writer's words are kept, history and signatures go."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.mail import reply
from mailgate.mail.parse import parse_message
from mailgate.mail.reply import extract_reply
from mailgate.mail.thanks import is_thanks_only

FIXTURES = Path(__file__).parent / "fixtures" / "mail"

# fixture: (text the writer added that must be in reply_text, quoted/signature text that must not be)
REPLIES = {
    "reply_gmail.eml": ('the scanner still shows "Error 42"', "please restart the printer"),
    "reply_android_gmail.eml": ("switched to the guest Wi-Fi", "when did the VPN last drop"),
    "reply_outlook_desktop_html.eml": ("opening the shared calendar", "could you send us the log"),
    "reply_outlook_html_only.eml": ("opening the shared calendar", "could you send us the log"),
    "reply_outlook_web.eml": ("please reissue the invoice", "which VAT number"),
    "reply_outlook_original_message.eml": ("Can you send a new one?", "here is your reset link"),
    "reply_outlook_ios.eml": ("gate 1 works", "Get Outlook for iOS"),
    "reply_apple_mail.eml": ("shows “No signal”", "which room is it"),
    "reply_iphone.eml": ("that fixed it", "Sent from my iPhone"),
    "reply_thunderbird.eml": ("40 GB are free now", "Hans Penguin"),
    "reply_samsung_galaxy.eml": ("B-OH 1234", "Sent from my Galaxy"),
    "reply_german_outlook.eml": ("Farbe fehlt weiterhin", "bitte starten Sie"),
    "reply_german_gmail.eml": ("Laufwerk T: freigeben", "ist eingerichtet"),
    "reply_french.eml": ("reste noir", "avez-vous mis à jour"),
    "reply_french_outlook.eml": ("certificat expiré", "quel est le message"),
    "reply_spanish.eml": ("sigue sin imprimir", "podrías reiniciar"),
    "reply_italian.eml": ("dal browser funziona", "anche dal browser?"),
    "reply_portuguese.eml": ("planilha de março", "qual planilha"),
    "reply_dutch.eml": ("via de docking station", "ook zonder"),
    "reply_swedish.eml": ("väldigt långsam", "kan du starta om"),
    "reply_chinese.eml": ("但还是无法登录", "请清除浏览器缓存后重试"),
    "reply_chinese_gmail.eml": ("现在打印正常", "请打开后盖"),
    "reply_japanese.eml": ("再起動後も映りません", "再起動してください"),
    "reply_thanks_but.eml": ("still doesn't work", "quota is now 50 GB"),
}


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_reply_text_keeps_the_writer_and_drops_the_history(name: str) -> None:
    kept, dropped = REPLIES[name]
    mail = parse_message((FIXTURES / name).read_bytes())
    assert kept in mail.reply_text
    assert dropped not in mail.reply_text
    # The full original is never lost: the history is still in body_text.
    assert kept in mail.body_text
    if dropped not in ("Get Outlook for iOS", "Sent from my iPhone", "Sent from my Galaxy", "Hans Penguin"):
        assert dropped in mail.body_text
    assert not mail.errors


def test_inline_answers_between_quoted_lines_are_all_kept() -> None:
    mail = parse_message((FIXTURES / "reply_inline_answers.eml").read_bytes())
    for answer in ("Linux, ideally Fedora.", "Yes, USB-C please.", "On February 1st."):
        assert answer in mail.reply_text
    for question in ("Which operating system", "docking station?", "When do you start", "Support Desk wrote"):
        assert question not in mail.reply_text


def test_forwarded_content_is_not_taken_for_quoted_history() -> None:
    mail = parse_message((FIXTURES / "forwarded_inline_gmail.eml").read_bytes())
    assert "Can someone fix this?" in mail.reply_text
    assert "gives a 404" in mail.reply_text


def test_bottom_posted_reply_after_quote_without_blank_line() -> None:
    text = "On Tue, 16 Jan 2024 at 09:00, Desk <support@localhost> wrote:\n> old text\nnew text\n"
    assert extract_reply(text) == "new text"


def test_unquoted_attribution_cuts_everything_below() -> None:
    # Outlook-style replies put the history unquoted under "On … wrote:".
    text = "Fixed now.\n\nOn 16 Jan 2024, at 09:00, Desk <support@localhost> wrote:\n\nold text\n"
    assert extract_reply(text) == "Fixed now."


def test_a_sentence_mentioning_wrote_is_not_a_quote_header() -> None:
    text = "On Monday the manager wrote a memo about it.\nPlease check the attached memo."
    assert extract_reply(text) == text


def test_only_quoted_history_gives_empty_reply() -> None:
    assert extract_reply("> only\n> quoted\n") == ""


@pytest.mark.parametrize(
    "text",
    [
        "Thanks!",
        "thank you so much",
        "Danke",
        "Vielen Dank!\n\nViele Grüße\nMax",
        "Merci beaucoup",
        "Gracias",
        "Grazie mille!",
        "Obrigado",
        "Bedankt",
        "Tack så mycket!",
        "谢谢！",
        "ありがとうございます。",
        "Hi Anna,\n\nthanks a lot for your help!\n\nCheers,\nJohn Smith",
        "Perfect, thanks 👍",
        "Vielen Dank, funktioniert wieder.",
        "Merci, ça marche\u00a0!",
        "¡Muchas gracias!",
        "Gracias, ya funciona.",
        "Bedankt, het werkt weer!",
    ],
)
def test_thanks_only(text: str) -> None:
    assert is_thanks_only(text)


@pytest.mark.parametrize(
    "text",
    [
        "Thanks, but it still doesn't work",
        "Thanks for the update, the printer is still broken",
        "Thanks! Could you also reset my VPN token?",
        "Danke, aber der Drucker geht immer noch nicht.",
        "Merci, mais le problème persiste.",
        "Danke, funktioniert wieder nicht.",
        "Merci, mais ça ne marche pas.",
        "Funktioniert wieder.",  # approval with no thank-you: not a thanks
        "Perfect",
        "",
        "It still fails",
    ],
)
def test_not_thanks_only(text: str) -> None:
    assert not is_thanks_only(text)


def test_thanks_fixtures() -> None:
    only = parse_message((FIXTURES / "reply_thanks_only.eml").read_bytes())
    but = parse_message((FIXTURES / "reply_thanks_but.eml").read_bytes())
    iphone = parse_message((FIXTURES / "reply_iphone.eml").read_bytes())
    assert is_thanks_only(only.reply_text)
    assert is_thanks_only(iphone.reply_text)
    assert not is_thanks_only(but.reply_text)


@pytest.mark.parametrize(
    "text",
    [
        "NEW\n\nMax <m@x> schrieb am 15.01.2024 10:23:\n> old\n",
        "NEW\n\nDe: A <a@x>\nEnviado: lunes\nPara: B\nAsunto: x\n\nold",
        "NEW\n\nDa: A\nInviato: lunedì\nA: B\nOggetto: x\n\nold",
        "NEW\n\nDe: A\nEnviado: segunda\nPara: B\nAssunto: x\n\nold",
        "NEW\n\nVan: A\nVerzonden: maandag\nAan: B\nOnderwerp: x\n\nold",
        "NEW\n\nFrån: A\nSkickat: måndag\nTill: B\nÄmne: x\n\nold",
        "NEW\n\n差出人: A\n送信日時: 2024年1月15日\n宛先: B\n件名: x\n\nold",
        "NEW\n\n寄件者: A\n寄件日期: 2024\n收件者: B\n主旨: x\n\nold",
        "NEW\n\n-----Ursprüngliche Nachricht-----\nold",
        "NEW\n\nVon meinem iPhone gesendet\n\n> old",
        "NEW\n\niPhoneから送信\n\n> old",
        "NEW\n\nEnviado desde mi iPhone\nold",
        "NEW\n\nÀs 10:23 de 15/01/2024, A escreveu:\n\n> old",
        "NEW\n\n2024/01/15 10:23、山田 <t@x>のメール:\n\n> old",
    ],
)
def test_header_forms_without_a_fixture(text: str) -> None:
    assert extract_reply(text) == "NEW"


@pytest.mark.parametrize(
    "block",
    [
        "De la: A <a@x.example>\nTrimis: luni, 23 noiembrie 2026 11:02\nCătre: B\nSubiect: [SUP-1] Printer",  # ro
        "Šalje: A\nPoslano: ponedjeljak, 23. studenoga 2026. 11:02\nPrima: B\nPredmet: [SUP-1] Printer",  # hr
        "Từ: A\nĐã gửi: Thứ Hai, ngày 23 tháng 11 năm 2026 11:02\nĐến: B\nChủ đề: [SUP-1] Printer",  # vi
        "Dari: A\nDikirim: Senin, 23 November 2026 11.02\nKepada: B\nPerihal: RE: [SUP-1] Printer",  # id
        "จาก: A\nส่ง: 23 พฤศจิกายน 2026 11:02\nถึง: B\nเรื่อง: [SUP-1] Printer",  # th
    ],
)
def test_an_outlook_block_in_any_language_is_known_by_the_subject_it_repeats(block: str) -> None:
    text = f"NEW\n\n{block}\n\nold text\n"
    assert extract_reply(text, subject="Odp: [SUP-1] Printer") == "NEW"
    # Without the subject it repeats (or a time, or at the margin) such lines are the writer's.
    assert "old text" in extract_reply(text, subject="Another subject")
    assert "old text" in extract_reply(
        text.replace("11:02", "monday").replace("11.02", "x"), subject="[SUP-1] Printer"
    )
    indented = "NEW\n\n" + "\n".join("  " + line for line in block.splitlines()) + "\n\nold text\n"
    assert "old text" in extract_reply(indented, subject="[SUP-1] Printer")


def test_groupwise_and_zoho_attributions_open_unquoted_history() -> None:
    groupwise = 'NEW\n\n>>> "Support" <support@x.example> 23.11.2026 11:02 >>>\nold text\n'
    zoho = (
        "NEW\n\n---- On Mon, 23 Nov 2026 16:32:13 +0530 Support <support@x.example> wrote ----\n\nold text\n"
    )
    assert extract_reply(groupwise) == extract_reply(zoho) == "NEW"
    assert "old" in extract_reply("NEW\n\n>>> quoted twice\nold\n")  # no date, no address: a quote
    assert extract_reply(groupwise, forward=True).endswith("old text")


# The first words of every kind of line reply extraction looks for, as clients write them.
_MARKS = [
    "> quoted",
    "-- ",
    "--",
    "---------- Forwarded message ---------",
    "Begin forwarded message:",
    "Début du message réexpédié :",
    "Sent from my iPhone",
    "Gesendet von meinem iPad",
    "iPhoneから送信",
    "-----Original Message-----",
    "From: Alice <a@example.com>",
    "**From:** Alice",
    "发件人: 张三",
    "_" * 32,
    "On Mon, 15 Jan 2024 at 10:23, Alice wrote:",
    "Am 15.01.2024 um 10:23 schrieb Alice:",
    "Den mån 15 jan. 2024 kl 10:23 skrev Alice <a@x>:",
    "在 2024年1月15日 10:23，Alice 写道：",
    "Le lun. 15 janv. 2024, Alice a écrit :",
    "Thanks, it works now",
    "see the attached log",
]


@settings(max_examples=500, deadline=None)
@given(
    mark=st.sampled_from(_MARKS),
    lead=st.sampled_from(["", " ", "\t", "\u200b", "\ufeff ", " \u200b"]),
    case=st.sampled_from([str, str.upper, str.lower, str.title]),
    tail=st.text(alphabet="abcisſıK: ：>-_", max_size=8),
)
def test_no_line_a_marker_test_would_take_is_passed_over_as_plain(
    mark: str, lead: str, case: Any, tail: str
) -> None:
    """Reply extraction passes over plain lines with one combined test; every line that any of
    its own tests (quote, signature, forward, mobile footer, Outlook block, quote header) would
    take must be caught by that combined test, whatever its letter case or leading space."""
    line = lead + case(mark) + tail
    clean = reply._clean(line)
    taken = (
        reply._QUOTED_RE.match(line)
        or reply._SIG_RE.match(line.strip(reply._INVISIBLE))
        or any(
            rx.match(clean)
            for rx in (
                reply._FORWARD_RE,
                reply._MOBILE_RE,
                reply._ORIGINAL_RE,
                reply._FROM_RE,
                reply._UNDERSCORES_RE,
                reply._ATTRIBUTION_START_RE,
            )
        )
        or clean.endswith(reply._COLONS)
    )
    if taken:
        assert clean.endswith(reply._COLONS) or reply._ANY_MARK_RE.match(clean), repr(line)
