#!/usr/bin/env python3
"""Draw the workshop's wiring diagrams as SVG (docs/workshop.md): standard library only.

    python3 docs/img/draw.py        # rewrites docs/img/*.svg

Pins, parts and values are the ones in docs/raspberry-pi.md (its ASCII drawings are the
reference); these pictures are for people who have never read a schematic.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent

RED, BLACK, ORANGE, GREEN, BLUE, PURPLE, YELLOW, GREY, TEAL = (
    "#d62728", "#222222", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#c8a400", "#888888", "#17becf")
PCB, HAT = "#2e7d4f", "#1d3f6e"
FONT = "DejaVu Sans, Verdana, Arial, sans-serif"


class Svg:
    def __init__(self, w: int, h: int, title: str):
        self.w, self.h, self.parts = w, h, []
        self.parts.append(f'<title>{escape(title)}</title>')
        self.rect(0, 0, w, h, fill="#ffffff", stroke="none")

    def add(self, s: str) -> None:
        self.parts.append(s)

    def rect(self, x, y, w, h, fill="none", stroke=BLACK, sw=1.5, rx=0):
        self.add(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{rx}" fill="{fill}" '
                 f'stroke="{stroke}" stroke-width="{sw}"/>')

    def circle(self, x, y, r, fill="none", stroke=BLACK, sw=1.5):
        self.add(f'<circle cx="{x}" cy="{y}" r="{r}" fill="{fill}" stroke="{stroke}" stroke-width="{sw}"/>')

    def text(self, x, y, s, size=13, anchor="start", fill=BLACK, weight="normal", italic=False):
        style = ' font-style="italic"' if italic else ""
        self.add(f'<text x="{x}" y="{y}" font-family="{FONT}" font-size="{size}" text-anchor="{anchor}" '
                 f'fill="{fill}" font-weight="{weight}"{style}>{escape(s)}</text>')

    def wire(self, points, color, sw=3, dash=None):
        d = " ".join(f"{x},{y}" for x, y in points)
        dash = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="{sw}" '
                 f'stroke-linejoin="round" stroke-linecap="round"{dash}/>')

    def dot(self, x, y, color=BLACK):
        self.circle(x, y, 4.5, fill=color, stroke=color, sw=1)

    def save(self, name: str) -> None:
        body = "\n".join(self.parts)
        (HERE / name).write_text(f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
                                 f'viewBox="0 0 {self.w} {self.h}">\n{body}\n</svg>\n')


# -- the Pi's 40-pin header, seen from above with pin 1 at the left ---------------------------

PIN_NAMES = {1: "3V3", 2: "5V", 3: "GPIO2", 4: "5V", 5: "GPIO3", 6: "GND", 7: "GPIO4", 8: "GPIO14", 9: "GND",
             10: "GPIO15", 11: "GPIO17", 12: "GPIO18", 13: "GPIO27", 14: "GND", 15: "GPIO22", 16: "GPIO23",
             17: "3V3", 18: "GPIO24", 19: "GPIO10", 20: "GND", 21: "GPIO9", 22: "GPIO25", 23: "GPIO11", 24: "GPIO8",
             25: "GND", 26: "GPIO7", 27: "ID_SD", 28: "ID_SC", 29: "GPIO5", 30: "GND", 31: "GPIO6", 32: "GPIO12",
             33: "GPIO13", 34: "GND", 35: "GPIO19", 36: "GPIO16", 37: "GPIO26", 38: "GPIO20", 39: "GND", 40: "GPIO21"}


class Header:
    """Pin n of the header: odd pins on the lower row, even on the upper (the board's edge)."""

    STEP = 26

    def __init__(self, svg: Svg, x0: int, y0: int, used: dict[int, tuple[str, str]], board_w: int | None = None):
        self.svg, self.x0, self.y0 = svg, x0, y0
        bw = board_w or 20 * self.STEP + 60
        svg.rect(x0 - 40, y0 - 62, bw, 150, fill=PCB, stroke="#1b4d30", sw=2, rx=10)
        svg.text(x0 - 28, y0 - 42, "Raspberry Pi: the 40-pin header, from above (pin 1 at the left)",
                 size=13, fill="#ffffff", weight="bold")
        svg.rect(x0 - 12, y0 - 14, 20 * self.STEP, 2 * self.STEP + 2, fill="#111111", stroke="#111111", rx=3)
        for n in range(1, 41):
            x, y = self.pin(n)
            color = used.get(n, (None, None))[1]
            svg.circle(x, y, 7 if color else 5, fill=color or "#c9b037", stroke="#ffffff" if color else "#806d1a",
                       sw=1.5)
        for n, (label, color) in used.items():
            x, y = self.pin(n)
            if n % 2 == 0:  # the upper row: label above the board's edge
                svg.text(x, y0 - 20, f"{n}", size=11, anchor="middle", fill="#ffffff", weight="bold")
            else:
                svg.text(x, y0 + self.STEP + 26, f"{n}", size=11, anchor="middle", fill="#ffffff", weight="bold")
        self.used = used

    def pin(self, n: int) -> tuple[int, int]:
        col = (n - 1) // 2
        return self.x0 + col * self.STEP, self.y0 + (self.STEP if n % 2 else 0)

    def legend(self, x: int, y: int, title="header pins used") -> None:
        self.svg.text(x, y, title, size=13, weight="bold")
        for i, (n, (label, color)) in enumerate(sorted(self.used.items())):
            yy = y + 20 + i * 19
            self.svg.circle(x + 7, yy - 4, 6, fill=color, stroke=color)
            self.svg.text(x + 20, yy, f"pin {n}: {label}", size=12)


def pot(svg: Svg, x: int, y: int, label: str) -> dict[str, tuple[int, int]]:
    """A knob (10 kΩ linear pot) seen from the front, legs down: left = GND, middle = wiper, right = 3V3,
    so that turning it clockwise (the wiper towards the right leg) raises the value."""
    svg.rect(x - 30, y - 22, 60, 34, fill="#dddddd", stroke=GREY, rx=4)
    svg.circle(x, y - 5, 14, fill="#555555", stroke="#333333")
    svg.wire([(x, y - 5), (x + 8, y - 14)], "#ffffff", sw=2.5)
    legs = {"lo": (x - 18, y + 34), "wiper": (x, y + 34), "hi": (x + 18, y + 34)}
    for lx, ly in legs.values():
        svg.wire([(lx, y + 12), (lx, ly)], GREY, sw=3)
    svg.text(x - 44, y, label, size=13, anchor="end", weight="bold")
    return legs


# -- 1. knobs: MCP3008 on SPI0 ----------------------------------------------------------------


def pin_label(s: Svg, x: int, y: int, n: int, what: str, color: str, width: int = 230) -> tuple[int, int]:
    """A tag at a wire's end: "Pi pin N · what"; returns where the wire meets it."""
    s.rect(x, y - 13, width, 26, fill="#f4f4f4", stroke=color, sw=2, rx=13)
    s.circle(x + 13, y, 6, fill=color, stroke=color)
    s.text(x + 26, y + 5, f"Pi pin {n} · {what}", size=12, weight="bold")
    return x, y


def knobs() -> None:
    s = Svg(1000, 805, "Knobs: pots into an MCP3008 on the Pi's SPI pins")
    used = {1: ("3V3 (for the knobs)", RED), 9: ("GND (for the knobs)", BLACK),
            17: ("3V3 (for the chip)", RED), 19: ("GPIO10 SPI MOSI", BLUE), 20: ("GND (for the chip)", BLACK),
            21: ("GPIO9 SPI MISO", GREEN), 23: ("GPIO11 SPI SCLK", ORANGE), 24: ("GPIO8 SPI CE0", PURPLE),
            25: ("GND (for the chip)", BLACK)}
    h = Header(s, 300, 90, used)
    h.legend(30, 236, "Pi pins used (3V3 pins are all the same, so are GND pins)")
    s.text(500, 222, "Each wire ends at a tag that names its pin on the header above.", size=13, italic=True)

    # the chip: DIP-16, notch up; pins 1-8 down the left, 16-9 down the right
    cx, cy, pitch = 430, 270, 36
    s.rect(cx, cy, 160, 8 * pitch + 4, fill="#333333", stroke=BLACK, rx=4)
    s.add(f'<path d="M {cx + 67} {cy} a 13 13 0 0 0 26 0" fill="#666666"/>')
    s.text(cx + 80, cy + 8 * pitch + 28, "MCP3008 (notch up)", size=14, anchor="middle", weight="bold")
    left = ["CH0", "CH1", "CH2", "CH3", "CH4", "CH5", "CH6", "CH7"]
    right = ["VDD", "VREF", "AGND", "CLK", "DOUT", "DIN", "CS", "DGND"]
    lp, rp = {}, {}
    for i in range(8):
        y = cy + 20 + i * pitch
        s.wire([(cx - 14, y), (cx, y)], "#aaaaaa", sw=5)
        s.wire([(cx + 160, y), (cx + 174, y)], "#aaaaaa", sw=5)
        s.text(cx + 8, y + 4, f"{i + 1} {left[i]}", size=11, fill="#ffffff")
        s.text(cx + 152, y + 4, f"{right[i]} {16 - i}", size=11, anchor="end", fill="#ffffff")
        lp[left[i]], rp[right[i]] = (cx - 14, y), (cx + 174, y)

    # the chip's right side: one straight wire per pin to its tag (VREF joins VDD)
    tag_x = 700
    for name, n, what, color in (("VDD", 17, "3V3", RED), ("AGND", 25, "GND", BLACK),
                                 ("CLK", 23, "SPI SCLK (GPIO11)", ORANGE), ("DOUT", 21, "SPI MISO (GPIO9)", GREEN),
                                 ("DIN", 19, "SPI MOSI (GPIO10)", BLUE), ("CS", 24, "SPI CE0 (GPIO8)", PURPLE),
                                 ("DGND", 20, "GND", BLACK)):
        x, y = rp[name]
        s.wire([(x, y), (tag_x, y)], color)
        pin_label(s, tag_x, y, n, what, color)
    jx = rp["VDD"][0] + 22
    s.wire([rp["VREF"], (jx, rp["VREF"][1]), (jx, rp["VDD"][1])], RED)
    s.dot(jx, rp["VDD"][1], RED)
    s.text(tag_x + 6, rp["VREF"][1] + 5, "VREF joins VDD", size=11, italic=True)
    # the 100 nF capacitor between VDD (16) and AGND (14), drawn beside them
    capx = jx + 40
    s.wire([(capx, rp["VDD"][1]), (capx, rp["VDD"][1] + 26)], RED, sw=2)
    s.wire([(capx - 10, rp["VDD"][1] + 26), (capx + 10, rp["VDD"][1] + 26)], BLACK, sw=3)
    s.wire([(capx - 10, rp["VDD"][1] + 32), (capx + 10, rp["VDD"][1] + 32)], BLACK, sw=3)
    s.wire([(capx, rp["VDD"][1] + 32), (capx, rp["AGND"][1])], BLACK, sw=2)
    s.dot(capx, rp["VDD"][1], RED)
    s.dot(capx, rp["AGND"][1], BLACK)
    s.text(capx + 14, rp["VREF"][1] + 18, "", size=1)
    s.text(815, 575, "100 nF capacitor from VDD (16)", size=12, anchor="middle", italic=True)
    s.text(815, 591, "to AGND (14), close to the chip", size=12, anchor="middle", italic=True)

    # three knobs in a row below the chip's left side; their rails get their own 3V3 and GND pins
    rail_hi, rail_lo = 690, 706
    xs = [110, 220, 330]
    colors = [YELLOW, TEAL, "#e377c2"]
    for i, x in enumerate(xs):
        legs = pot(s, x, 610, "")
        s.text(x, 740, f"knob {i + 1}", size=13, anchor="middle", weight="bold")
        hi, wiper, lo = legs["hi"], legs["wiper"], legs["lo"]
        s.wire([hi, (hi[0], rail_hi)], RED)
        s.wire([lo, (lo[0], rail_lo)], BLACK)
        s.dot(hi[0], rail_hi, RED)
        s.dot(lo[0], rail_lo, BLACK)
        chx, chy = lp[f"CH{i}"]
        up = 560 - i * 0
        lane = 370 + i * 16
        s.wire([(wiper[0], 588), (wiper[0], 560 - (2 - i) * 14), (lane, 560 - (2 - i) * 14), (lane, chy), (chx, chy)],
               colors[i])
        s.text(lane - 4, chy - 6, "", size=1)
    s.wire([(xs[0] + 18, rail_hi), (560, rail_hi)], RED)
    s.wire([(xs[0] - 18, rail_lo), (560, rail_lo)], BLACK)
    pin_label(s, 560, rail_hi - 2, 1, "3V3 (knobs' + rail)", RED, 200)
    pin_label(s, 560, rail_lo + 26, 9, "GND (knobs' − rail)", BLACK, 200)
    s.wire([(560, rail_lo), (560, rail_lo + 26)], BLACK)
    s.text(40, 510, "CH3…CH7: more knobs the same way", size=12, italic=True)
    s.text(40, 527, "(up to 8); unused ones to GND.", size=12, italic=True)
    s.text(815, 630, "Each knob: a 10 kΩ linear pot.", size=12, anchor="middle")
    s.text(815, 646, "Legs seen from the front: left GND,", size=12, anchor="middle")
    s.text(815, 662, "middle (wiper) to CH0/1/2, right 3V3:", size=12, anchor="middle")
    s.text(815, 678, "clockwise turns the value up.", size=12, anchor="middle")
    s.text(40, 790, "Power the MCP3008 from 3.3 V, never 5 V: it would push 5 V into the Pi's pin 21.",
           size=13, fill=RED, weight="bold")
    s.save("wiring-knobs.svg")


# -- 2. MIDI: a USB keyboard, or DIN through an opto-isolator ------------------------------------


def keyboard(s: Svg, x: int, y: int, w: int = 260) -> None:
    s.rect(x, y, w, 70, fill="#444444", stroke=BLACK, rx=6)
    n = 14
    kw = (w - 20) / n
    for i in range(n):
        s.rect(x + 10 + i * kw, y + 22, kw - 2, 42, fill="#ffffff", stroke="#999999", sw=1)
    for i in (0, 1, 3, 4, 5, 7, 8, 10, 11, 12):
        s.rect(x + 10 + (i + 0.68) * kw, y + 22, kw * 0.6, 26, fill="#111111", stroke="#111111", sw=1)
    s.circle(x + 22, y + 11, 5, fill="#bbbbbb", stroke="#bbbbbb")
    s.circle(x + 40, y + 11, 5, fill="#bbbbbb", stroke="#bbbbbb")


def midi() -> None:
    s = Svg(1000, 812, "MIDI: a USB keyboard, or a DIN MIDI keyboard through an opto-isolator")
    s.text(30, 36, "A. A USB MIDI keyboard: plug it in. Nothing to wire, nothing to set.", size=16, weight="bold")
    keyboard(s, 40, 60)
    s.text(170, 150, "USB MIDI keyboard", size=13, anchor="middle")
    s.rect(560, 56, 300, 110, fill=PCB, stroke="#1b4d30", sw=2, rx=10)
    s.text(710, 120, "Raspberry Pi", size=15, anchor="middle", fill="#ffffff", weight="bold")
    for i in range(2):
        s.rect(840, 70 + i * 46, 40, 34, fill="#cccccc", stroke=GREY, rx=3)
    s.text(900, 100, "USB", size=12)
    s.wire([(300, 95), (420, 95), (420, 87), (840, 87)], BLACK, sw=5)
    s.text(40, 190, "pi-synth listens to every MIDI port it finds, plugged in before or after it starts "
                    "([midi] ports = \"all\").", size=12, italic=True)

    s.text(30, 250, "B. A keyboard with a round 5-pin MIDI OUT: a small circuit on the Pi's pins.",
           size=16, weight="bold")
    used = {1: ("3V3", RED), 6: ("GND", BLACK), 10: ("GPIO15 UART RX (MIDI in)", GREEN),
            17: ("3V3 (for the pull-up)", RED)}
    h = Header(s, 430, 340, used, board_w=580)
    h.legend(40, 300, "Pi pins used")
    # DIN-5 socket, solder side: 3, 5, 2, 4, 1 along the arc
    dx, dy = 140, 600
    s.circle(dx, dy, 52, fill="#eeeeee", stroke=BLACK, sw=2)
    pos = {"3": (-38, 10), "5": (-28, -28), "2": (0, -40), "4": (28, -28), "1": (38, 10)}
    for label, (px, py) in pos.items():
        s.circle(dx + px, dy + py, 6, fill="#c9b037" if label in "45" else "#bbbbbb", stroke="#806d1a")
        s.text(dx + px, dy + py + 22, label, size=12, anchor="middle", weight="bold")
    s.text(dx, dy + 76, "MIDI IN socket (DIN-5 female)", size=12, anchor="middle")
    s.text(dx, dy + 92, "from the back, where you solder;", size=12, anchor="middle")
    s.text(dx, dy + 108, "pins 1, 2, 3 stay unconnected", size=12, anchor="middle")
    # 6N138, DIP-8, pins 1-4 left (top to bottom), 8-5 right
    ox, oy, op = 470, 520, 32
    s.rect(ox, oy, 130, 4 * op + 6, fill="#333333", stroke=BLACK, rx=4)
    s.add(f'<path d="M {ox + 52} {oy} a 13 13 0 0 0 26 0" fill="#666666"/>')
    s.text(ox + 65, oy + 4 * op + 30, "6N138 opto-isolator", size=13, anchor="middle", weight="bold")
    lp, rp = {}, {}
    for i, (l, r) in enumerate(zip(["1 NC", "2 anode", "3 cathode", "4 NC"], ["VCC 8", "VB 7", "VO 6", "GND 5"])):
        y = oy + 20 + i * op
        s.wire([(ox - 12, y), (ox, y)], "#aaaaaa", sw=5)
        s.wire([(ox + 130, y), (ox + 142, y)], "#aaaaaa", sw=5)
        s.text(ox + 6, y + 4, l, size=10, fill="#ffffff")
        s.text(ox + 124, y + 4, r, size=10, anchor="end", fill="#ffffff")
        lp[i + 1], rp[8 - i] = (ox - 12, y), (ox + 142, y)
    # socket pin 4 → 220 Ω → anode (2); socket pin 5 → cathode (3); 1N4148 across, its stripe on the pin-4 side
    p4, p5 = (dx + pos["4"][0], dy + pos["4"][1]), (dx + pos["5"][0], dy + pos["5"][1])
    top = lp[2][1]
    s.wire([p4, (p4[0], top), (250, top)], ORANGE)
    resistor(s, 250, top, 310, "220 Ω")
    s.wire([(310, top), lp[2]], ORANGE)
    bottom = lp[3][1] + 60
    s.wire([p5, (p5[0] - 50, p5[1]), (p5[0] - 50, 680), (400, 680), (400, lp[3][1]), lp[3]], BLUE)
    diode(s, 360, 680, top)
    s.dot(360, 680, BLUE)
    s.dot(360, top, ORANGE)
    s.text(372, 610, "1N4148", size=11)
    s.text(372, 624, "(stripe up)", size=11)
    # right side: VCC 8 → 3V3; VB 7 → 10 kΩ → GND; VO 6 → GPIO15 and a 1 kΩ pull-up to 3V3; GND 5 → GND
    tx = 800
    s.wire([rp[8], (tx, rp[8][1])], RED)
    pin_label(s, tx, rp[8][1], 1, "3V3", RED, 190)
    s.wire([rp[7], (650, rp[7][1])], GREY)
    resistor(s, 650, rp[7][1], 720, "10 kΩ")
    s.wire([(720, rp[7][1]), (760, rp[7][1]), (760, rp[5][1])], BLACK)
    s.dot(760, rp[5][1], BLACK)
    s.wire([rp[6], (tx, rp[6][1])], GREEN)
    pin_label(s, tx, rp[6][1], 10, "GPIO15 RX", GREEN, 190)
    s.wire([rp[5], (tx, rp[5][1])], BLACK)
    pin_label(s, tx, rp[5][1], 6, "GND", BLACK, 190)
    # the pull-up: from VO (6) down, through 1 kΩ, to 3V3 (its own tag)
    s.dot(630, rp[6][1], GREEN)
    s.wire([(630, rp[6][1]), (630, 720), (680, 720)], GREEN)
    resistor(s, 680, 720, 750, "1 kΩ pull-up")
    s.wire([(750, 720), (tx, 720)], RED)
    pin_label(s, tx, 720, 17, "3V3", RED, 190)
    s.text(40, 760, "Then in pi-synth.toml: [midi] din = \"/dev/serial0\" (provisioning set the UART to MIDI's "
                    "31250 baud).", size=12)
    s.text(40, 778, "No notes? Swap the wires on socket pins 4 and 5 (sockets are drawn both ways round): "
                    "nothing breaks.", size=12)
    s.text(40, 796, "The opto-isolator keeps the keyboard's ground apart from the Pi's: no hum, no damage.",
           size=12, italic=True)
    s.save("wiring-midi.svg")


def resistor(s: Svg, x1: int, y: int, x2: int, label: str, vertical: bool = False) -> None:
    s.rect(x1, y - 8, x2 - x1, 16, fill="#e8d8a8", stroke="#7a6a3a", rx=5)
    for k in (0.25, 0.45, 0.65):
        bx = x1 + (x2 - x1) * k
        s.wire([(bx, y - 8), (bx, y + 8)], "#7a4a1a", sw=3)
    s.text((x1 + x2) / 2, y - 14, label, size=11, anchor="middle")


def diode(s: Svg, x: int, y_from: int, y_to: int) -> None:
    """A small glass diode between y_from (anode) and y_to (cathode, the black stripe)."""
    top, bot = min(y_from, y_to), max(y_from, y_to)
    s.wire([(x, top), (x, bot)], GREY, sw=2)
    s.rect(x - 7, top + 30, 14, bot - top - 60, fill="#ffb0a0", stroke="#aa5544", rx=4)
    stripe_y = top + 34 if y_to < y_from else bot - 40
    s.rect(x - 7, stripe_y, 14, 6, fill=BLACK, stroke=BLACK)


# -- 3. audio out: a HAT on the header, or a USB interface -------------------------------------


def speaker(s: Svg, x: int, y: int, label: str) -> None:
    s.rect(x, y, 70, 100, fill="#333333", stroke=BLACK, rx=8)
    s.circle(x + 35, y + 30, 14, fill="#666666", stroke="#222222")
    s.circle(x + 35, y + 68, 22, fill="#666666", stroke="#222222")
    s.text(x + 35, y + 122, label, size=12, anchor="middle")


def headphones(s: Svg, x: int, y: int) -> None:
    s.add(f'<path d="M {x} {y + 40} a 30 30 0 0 1 60 0" fill="none" stroke="{BLACK}" stroke-width="5"/>')
    s.rect(x - 8, y + 34, 16, 30, fill="#333333", stroke=BLACK, rx=5)
    s.rect(x + 52, y + 34, 16, 30, fill="#333333", stroke=BLACK, rx=5)


def audio() -> None:
    s = Svg(1000, 600, "Sound out: an audio HAT on the header, or a USB audio interface")
    s.text(30, 36, "A. An audio HAT (e.g. a HiFiBerry DAC+ Zero): press it onto the 40 pins, Pi switched off.",
           size=16, weight="bold")
    # side view: Pi board, header, HAT above
    s.rect(60, 200, 400, 18, fill=PCB, stroke="#1b4d30", rx=3)
    s.text(260, 240, "Raspberry Pi (from the side)", size=12, anchor="middle")
    s.rect(120, 160, 280, 40, fill="#111111", stroke="#111111")
    for i in range(20):
        s.wire([(126 + i * 14, 160), (126 + i * 14, 120)], "#c9b037", sw=3)
    s.text(410, 150, "the 40 pins go all the way in", size=11)
    s.rect(60, 96, 400, 22, fill=HAT, stroke="#10284a", rx=3)
    s.text(260, 88, "audio HAT", size=13, anchor="middle", weight="bold")
    s.rect(420, 78, 46, 30, fill="#bbbbbb", stroke=GREY, rx=4)
    s.text(443, 70, "line out", size=11, anchor="middle")
    s.wire([(466, 93), (600, 93), (600, 150), (680, 150)], BLACK, sw=4)
    speaker(s, 690, 90, "powered speakers")
    headphones(s, 830, 100)
    s.text(860, 190, "or headphones", size=12, anchor="middle")
    s.text(60, 290, "It uses pins 12, 35, 38, 40 (I2S sound) and leaves SPI (knobs) and the UART (MIDI) free.",
           size=13)
    s.text(60, 310, "Tell provisioning which HAT it is: --hat hifiberry-dac (see the HAT table in "
                    "docs/raspberry-pi.md).", size=13)

    s.text(30, 380, "B. A USB audio interface (class compliant: no driver needed): plug it in.", size=16,
           weight="bold")
    s.rect(60, 420, 260, 110, fill=PCB, stroke="#1b4d30", sw=2, rx=10)
    s.text(170, 480, "Raspberry Pi", size=15, anchor="middle", fill="#ffffff", weight="bold")
    s.rect(300, 440, 40, 34, fill="#cccccc", stroke=GREY, rx=3)
    s.wire([(340, 457), (420, 457)], BLACK, sw=5)
    s.rect(420, 425, 170, 70, fill="#555555", stroke=BLACK, rx=8)
    s.text(505, 455, "USB audio", size=13, anchor="middle", fill="#ffffff")
    s.text(505, 473, "interface", size=13, anchor="middle", fill="#ffffff")
    s.circle(445, 495, 9, fill="#bbbbbb", stroke=GREY)
    s.text(445, 520, "mic / line in", size=11, anchor="middle")
    s.wire([(590, 460), (680, 460)], BLACK, sw=4)
    speaker(s, 690, 410, "powered speakers")
    s.text(60, 575, "Provision with --hat usb --no-onboard-audio, so the interface is the Pi's first sound card.",
           size=13)
    s.save("wiring-audio.svg")


# -- 0. the whole box --------------------------------------------------------------------------


def box() -> None:
    s = Svg(1000, 460, "The workshop box: what connects to what")
    s.rect(380, 150, 240, 150, fill=PCB, stroke="#1b4d30", sw=2, rx=12)
    s.rect(380, 150, 240, 34, fill=HAT, stroke="#10284a", rx=8)
    s.text(500, 173, "audio HAT (or USB audio)", size=12, anchor="middle", fill="#ffffff")
    s.text(500, 235, "Raspberry Pi 4 / 5", size=16, anchor="middle", fill="#ffffff", weight="bold")
    s.text(500, 258, "+ SD card with pi-synth", size=12, anchor="middle", fill="#ffffff")
    s.text(500, 280, "+ official power supply", size=12, anchor="middle", fill="#ffffff")
    keyboard(s, 40, 40, 220)
    s.text(150, 130, "MIDI keyboard (USB or DIN)", size=13, anchor="middle")
    s.wire([(260, 75), (320, 75), (320, 200), (380, 200)], BLACK, sw=4)
    # knobs box
    s.rect(60, 250, 200, 90, fill="#eeeeee", stroke=GREY, rx=8)
    for i in range(4):
        s.circle(90 + i * 46, 285, 16, fill="#555555", stroke="#333333")
    s.text(160, 328, "knobs: MCP3008 + pots", size=12, anchor="middle")
    s.wire([(260, 295), (380, 260)], PURPLE, sw=4)
    s.text(300, 300, "SPI", size=12, fill=PURPLE)
    speaker(s, 780, 120, "speakers / headphones")
    s.wire([(620, 170), (780, 170)], BLACK, sw=4)
    s.text(700, 160, "line out", size=12, anchor="middle")
    # mic
    s.rect(800, 300, 20, 60, fill="#333333", stroke=BLACK, rx=8)
    s.circle(810, 295, 16, fill="#777777", stroke=BLACK)
    s.wire([(800, 330), (620, 280)], GREY, sw=4, dash="8,6")
    s.text(700, 340, "microphone (audio in, coming)", size=12, anchor="middle", fill=GREY)
    # laptop
    s.rect(400, 350, 200, 80, fill="#dddddd", stroke=GREY, rx=6)
    s.text(500, 385, "your laptop", size=13, anchor="middle", weight="bold")
    s.text(500, 405, "models + settings on the SD card", size=11, anchor="middle")
    s.wire([(500, 350), (500, 300)], TEAL, sw=4, dash="4,6")
    s.save("workshop-box.svg")


if __name__ == "__main__":
    box()
    knobs()
    midi()
    audio()
    print("wrote", ", ".join(sorted(p.name for p in HERE.glob("*.svg"))))
