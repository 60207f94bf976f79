"""The patterns redaction looks for: value shapes, context words, ordinary numbers to keep.

Every pattern is compiled once, at import.
"""

from __future__ import annotations

import re

_I = re.IGNORECASE

CARD_CONTEXT = re.compile(
    r"\b(?:card|credit|debit|visa|master\s?card|amex|american\s+express|discover|maestro"
    r"|diners|jcb|cc|pan)\b",
    _I,
)
CVV_CONTEXT = re.compile(
    r"\b(?:cvv2?|cvc2?|cid|csc|security\s+(?:code|number|digits)"
    r"|verification\s+(?:code|number|value)"
    r"|(?:three|four|3|4)[\s-]digit|digits\s+on\s+the\s+back|code\s+on\s+the\s+back"
    r"|back\s+of\s+the\s+card)\b",
    _I,
)
EXPIRY_CONTEXT = re.compile(
    r"\b(?:exp|expiry|expiration|expires?|expiring|expired|valid\s+(?:thru|through|until|till)"
    r"|good\s+(?:thru|through|until|till))\b",
    _I,
)
SSN_CONTEXT = re.compile(r"\b(?:ssn|social\s+security|social|ss\s+number|ss#)", _I)
ROUTING_CONTEXT = re.compile(r"\b(?:routing|aba|transit\s+number|rtn|sort\s+code)\b", _I)
ACCOUNT_CONTEXT = re.compile(
    r"\b(?:account|acct|a/c|checking|savings|bank|iban|deposit)\b",
    _I,
)
PHONE_CONTEXT = re.compile(
    r"\b(?:phone|call|calling|called|mobile|cell|fax|tel|telephone|desk|office|reach|text"
    r"|contact|landline|extension|dial|messages|whatsapp|answering|ring)\b",
    _I,
)
# "number" alone says nothing about which kind; it helps only a phone-shaped run.
PHONE_OR_NUMBER = re.compile(rf"{PHONE_CONTEXT.pattern}|\bnumber\b", _I)
DOB_CONTEXT = re.compile(
    r"\b(?:born|birth|dob|d\.o\.b|birthday|birthdate|bday)\b",
    _I,
)
# Identifier words count only right before the number ("order number is 123", not
# "about order 5 at 555-123-4567").
_ID_TAIL = r"(?:\s+(?:number|no\.?|num|#|id|code))?(?:\s+(?:is|was|of))?\s*[:#]?\s*$"
PERSONAL_ID_CONTEXT = re.compile(
    r"\b(?:licen[cs]e|passport|national\s+id|id\s+card|tax\s+id|tin|ein|itin|medicare"
    rf"|medicaid|member\s+id|membership|policy|pin|password|passcode){_ID_TAIL}",
    _I,
)
RECORD_ID_CONTEXT = re.compile(
    r"\b(?:order|reference|ref|ticket|invoice|confirmation|tracking|case|claim|booking"
    rf"|reservation|transaction|item|sku|model|serial|flight|room|page){_ID_TAIL}",
    _I,
)
MONEY_AFTER = re.compile(
    r"^\s*(?:dollars?|bucks|usd|euros?|eur|pounds?|gbp|cents?|percent|%|k\b|grand)", _I
)

MONTHS = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_NUMWORD = (
    r"(?:zero|oh|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen"
    r"|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty"
    r"|seventy|eighty|ninety|hundred|thousand|first|second|third|fourth|fifth|sixth|seventh"
    r"|eighth|ninth|tenth|eleventh|twelfth|thirteenth|fourteenth|fifteenth|sixteenth"
    r"|seventeenth|eighteenth|nineteenth|twentieth|thirtieth)"
)
_SPOKEN_NUMBER = rf"{_NUMWORD}(?:[\s,-]+(?:and\s+)?{_NUMWORD})*"

EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+"
    r"[A-Za-z]{2,24}(?![\w-])"
)
SPOKEN_EMAIL = re.compile(
    r"\b[a-z0-9]+(?:\s+(?:dot|underscore|dash|hyphen)\s+[a-z0-9]+)*\s+at\s+[a-z0-9]+"
    r"(?:\s+dot\s+[a-z0-9]+)*\s+dot\s+(?:com|net|org|edu|gov|io|co|uk|us|ca|de|info|biz)\b",
    _I,
)
IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]{4}){2,7}(?:[ ]?[A-Za-z0-9]{1,4})?\b")

# Dates: numerals (9/24/1946, 1946-09-24, 24.09.1946), month names, or spoken.
NUMERIC_DATE = re.compile(
    r"(?<![\d/.-])(?:\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})|\d{4}-\d{1,2}-\d{1,2})(?![\d/])"
)
NAMED_DATE = re.compile(
    rf"\b(?:{MONTHS}\s+(?:the\s+)?(?:\d{{1,2}}(?:st|nd|rd|th)?|{_SPOKEN_NUMBER})(?:\s*,)?\s+"
    rf"(?:of\s+)?(?:\d{{4}}|{_SPOKEN_NUMBER})"
    rf"|(?:the\s+)?(?:\d{{1,2}}(?:st|nd|rd|th)?|{_SPOKEN_NUMBER})\s+(?:of\s+)?{MONTHS}(?:\s*,)?\s+"
    rf"(?:\d{{4}}|{_SPOKEN_NUMBER}))\b",
    _I,
)
EXPIRY_NUMERIC = re.compile(r"(?<![\d/.])(?:0?[1-9]|1[0-2])\s?[/-]\s?(?:20)?\d{2}(?![\d/])")
EXPIRY_NAMED = re.compile(rf"\b{MONTHS}\s+(?:of\s+)?(?:20\d{{2}}|\d{{2}}|{_SPOKEN_NUMBER})\b", _I)

# Ordinary numbers that must stay: money, times, plain dates, IPs, decimals, thousands.
PROTECTED = re.compile(
    r"(?=[\d$€£¥a-fA-F])(?:[$€£¥]\s?\d[\d,]*(?:\.\d+)?"
    r"|(?<![\d.])\d{1,2}:\d{2}(?::\d{2})?(?:\s?[ap]\.?m\.?)?(?![\d])"
    r"|(?<![\d./-])\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2})?)?(?![\d])"
    r"|(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"
    r"|(?<![\d.,])\d+\.\d{1,2}(?![\d.])"
    # thousands up to 999,999,999,999: a longer one ("4,111,111,111,111,111") is a card
    r"|(?<![\d,])\d{1,3}(?:,\d{3}){1,3}(?![\d,])"
    r"|\b\d+(?:\.\d+)?\s?%"
    r"|\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b)",
    _I,
)
# Codes that mix letters and many digits (licence numbers, member ids): kept out of digit runs.
ALPHANUMERIC_ID = re.compile(
    r"(?<![A-Za-z\d_])(?=(?:[A-Za-z_]*\d){9})[A-Za-z\d_]{9,60}(?![A-Za-z\d_])"
)
ANY_DIGIT = re.compile(r"\d")
ANY_NUMBER_WORD = re.compile(
    r"\b(?:zero|oh|o|nought|naught|nil|one|two|three|four|five|six|seven|eight|nine|ten|eleven"
    r"|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty"
    r"|fou?rty|fifty|sixty|seventy|eighty|ninety)\b",
    _I,
)
SPOKEN_EMAIL_HINT = re.compile(r"\bat\b.*\bdot\b", _I | re.DOTALL)
PHONE_EXTENSION = re.compile(r"\s?(?:x|ext\.?|extension)\s?\d{1,5}\b", _I)

CONTEXT_CHARS = 60
ID_CONTEXT_CHARS = 32
