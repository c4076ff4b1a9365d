#!/usr/bin/env python3
"""Generate the PDF and DOCX documents of the sample FCC corpus.

The source text of every generated document lives in this script, so that
``data/samples/`` holds only ingestable documents.  The output is
deterministic: running the script twice gives byte-identical files
(reportlab ``invariant=1``; fixed DOCX core properties and zip timestamps).

Usage:
    .venv/bin/python scripts/make_sample_docs.py [--out data/samples]

The documents are illustrative restatements written in the style of FCC
Knowledge Database (KDB) publications.  They are not official KDB text.
Section references are written as "Section 2.1093" (not with the section
sign) so that no line of a KDB document is mistaken for a rule heading.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "data" / "samples"

# Fixed timestamp used for DOCX metadata and zip entries.
FIXED_DATE = dt.datetime(2024, 1, 15, 9, 0, 0)
ZIP_DATE = (2024, 1, 15, 9, 0, 0)

DISCLAIMER = (
    "Sample corpus document written in the style of an FCC Office of Engineering "
    "and Technology Knowledge Database (KDB) publication for a demonstration "
    "retrieval system. It is an illustrative restatement, not the official KDB text."
)

# ---------------------------------------------------------------------------
# Document sources.
#
# A document is a dict with a title, a short footer label, and a list of
# pages.  Each page is a list of blocks:
#   ("h2", text)            section heading
#   ("h3", text)            sub-heading
#   ("p", text)             paragraph
#   ("bullets", [text..])   bulleted list
#   ("numbers", [text..])   numbered list
#   ("table", [[cell..]..]) table, first row is the header
# In the PDF each page starts on a new physical page; in the DOCX pages are
# separated by page breaks.
# ---------------------------------------------------------------------------

KDB_447498 = {
    "file": "kdb_447498_rf_exposure.pdf",
    "title": "KDB 447498 D01 — General RF Exposure Guidance (Sample Summary)",
    "footer": "KDB 447498 D01 (sample)",
    "subject": "RF exposure procedures for mobile and portable devices",
    "pages": [
        [
            ("p", "Office of Engineering and Technology, Laboratory Division."),
            ("p", DISCLAIMER),
            ("h2", "1. Introduction"),
            (
                "p",
                "This publication describes the RF exposure procedures and equipment "
                "authorization policies that apply to mobile and portable devices evaluated "
                "under Sections 2.1091 and 2.1093 of the FCC rules, using the exposure limits "
                "of Section 1.1310. It explains how devices are categorized, when SAR testing "
                "may be excluded, how simultaneous transmission is handled, and how mobile "
                "exposure conditions are evaluated.",
            ),
            ("h2", "2. Device exposure categories"),
            (
                "p",
                "Portable devices are used with the radiating structure within 20 cm of the "
                "body of the user. They are evaluated in terms of specific absorption rate "
                "(SAR) against the limits of 1.6 W/kg averaged over 1 gram of tissue for the "
                "head and body, and 4 W/kg averaged over 10 grams of tissue for the "
                "extremities (general population exposure).",
            ),
            (
                "p",
                "Mobile devices are used with a separation distance of at least 20 cm between "
                "the radiating structure and the body of the user or nearby persons. They are "
                "evaluated against the maximum permissible exposure (MPE) limits. Fixed devices "
                "are physically secured at one location, and compliance is determined for the "
                "installation.",
            ),
            (
                "p",
                "The test separation distance is the smallest distance between the antenna or "
                "other radiating structure, or the outer surface of the device, and any part of "
                "the body of the user or a bystander, for the host form factor and exposure "
                "condition being considered. The distance used must be explained and justified "
                "in the filing, normally in the SAR report or the exclusion analysis.",
            ),
            (
                "p",
                "The maximum output power used for RF exposure evaluation must include the "
                "tune-up tolerance declared by the manufacturer: it is the highest power to "
                "which any production unit can be tuned, not the nominal power.",
            ),
        ],
        [
            ("h2", "3. Standalone SAR test exclusion"),
            (
                "p",
                "For frequencies from 100 MHz to 6 GHz and test separation distances of 50 mm "
                "or less, standalone 1-g head or body SAR and 10-g extremity SAR evaluation is "
                "not required when the following condition is met:",
            ),
            (
                "p",
                "[(maximum power of channel, including tune-up tolerance, in mW) / (minimum "
                "test separation distance, in mm)] x [square root of f(GHz)] is no more than "
                "3.0 for 1-g SAR, and no more than 7.5 for 10-g extremity SAR.",
            ),
            (
                "bullets",
                [
                    "f(GHz) is the RF channel transmit frequency in GHz.",
                    "Power and distance are rounded to the nearest mW and mm before the calculation.",
                    "The result is rounded to one decimal place for comparison with the threshold.",
                    "When the minimum test separation distance is less than 5 mm, a distance of "
                    "5 mm is applied to determine SAR test exclusion.",
                ],
            ),
            (
                "p",
                "For test separation distances greater than 50 mm, the power allowed at 50 mm "
                "is increased by (test separation distance - 50 mm) x (f(MHz)/150) mW for "
                "frequencies from 100 MHz to 1500 MHz, and by (test separation distance - "
                "50 mm) x 10 mW for frequencies above 1500 MHz and up to 6 GHz.",
            ),
            ("h3", "Worked example"),
            (
                "p",
                "A 2450 MHz transmitter has a maximum tune-up power of 10 mW and a minimum test "
                "separation distance of 5 mm. The test value is (10 / 5) x 1.565 = 3.1, which "
                "is above 3.0, so SAR testing is required for 1-g SAR. If the same transmitter "
                "is used at a minimum separation of 10 mm, the test value is (10 / 10) x 1.565 "
                "= 1.6, which is below 3.0, so standalone SAR testing is excluded.",
            ),
            (
                "p",
                "At 2450 MHz and 5 mm, the largest power that still qualifies for exclusion is "
                "about 9.6 mW (3.0 x 5 / 1.565).",
            ),
        ],
        [
            ("h2", "4. SAR measurement test reduction"),
            (
                "p",
                "When SAR testing is required, testing of the other required channels within a "
                "frequency band and operating mode is not needed when the reported 1-g SAR for "
                "the highest output power channel is 0.8 W/kg or less (2.0 W/kg or less for "
                "10-g extremity SAR), for transmission bands of 100 MHz or less. When the "
                "reported SAR is above these values, the other channels must also be tested, "
                "starting with the channel that has the next highest output power.",
            ),
            (
                "p",
                "Reported SAR is the measured SAR scaled up to the maximum tune-up power: "
                "reported SAR = measured SAR x (maximum tune-up power / measured conducted "
                "power).",
            ),
            ("h2", "5. Simultaneous transmission"),
            (
                "p",
                "When a device has more than one transmitter that can operate at the same "
                "time, simultaneous transmission SAR must be considered. Simultaneous "
                "transmission SAR measurement is not required when the sum of the 1-g SAR "
                "values of all simultaneously transmitting antennas is less than 1.6 W/kg.",
            ),
            (
                "p",
                "For a transmitter that qualified for standalone SAR test exclusion, an "
                "estimated 1-g SAR may be used in the sum: estimated SAR = [(maximum power, "
                "mW) / (minimum test separation distance, mm)] x [square root of f(GHz) / 7.5] "
                "W/kg. For test separation distances greater than 50 mm, an estimated SAR of "
                "0.4 W/kg may be used.",
            ),
            (
                "p",
                "When the sum of SAR is 1.6 W/kg or more, the SAR to peak location separation "
                "ratio (SPLSR) is evaluated for each pair of antennas: SPLSR = (SAR1 + "
                "SAR2)^1.5 / Ri, where Ri is the separation distance in mm between the peak "
                "SAR locations of the two antennas. Simultaneous transmission SAR measurement "
                "is not required for a pair whose SPLSR is 0.04 or less.",
            ),
        ],
        [
            ("h2", "6. Mobile exposure conditions"),
            (
                "p",
                "Mobile devices are evaluated at a separation distance of at least 20 cm "
                "against the MPE limits of Section 1.1310. The power density at a distance R "
                "can be estimated with the far-field equation S = EIRP / (4 x pi x R^2).",
            ),
            (
                "p",
                "Example: a 2.4 GHz digitally modulated transmitter with a maximum conducted "
                "output power of 1 watt (30 dBm) and a 6 dBi antenna has an EIRP of 36 dBm, "
                "or about 3981 mW. At 20 cm the estimated power density is 3981 / (4 x 3.1416 "
                "x 400) = 0.79 mW/cm², which is below the general population limit of "
                "1.0 mW/cm² for frequencies from 1,500 MHz to 100,000 MHz.",
            ),
            (
                "p",
                "When the evaluated exposure exceeds the limit at 20 cm, the device must either "
                "be restricted to a larger separation distance, with installation instructions "
                "and labelling that ensure it, or be evaluated as a portable device.",
            ),
            ("h2", "7. Relationship to the RF exposure exemption rules"),
            (
                "p",
                "The Commission's updated RF exposure rules, adopted in 2019, replaced the "
                "SAR test exclusion formulas in Section 3 of this publication with the "
                "exemption criteria of Section 1.1307(b)(3): a 1 mW exemption, a SAR-based "
                "exemption that uses a threshold power P_th for separation distances from "
                "0.5 cm to 40 cm, and an MPE-based exemption that uses the effective radiated "
                "power. After the transition period, new applications must use the exemption "
                "criteria. The exclusion formulas in this publication remain useful for "
                "understanding equipment authorized before the transition.",
            ),
            ("h2", "8. Filing checklist"),
            (
                "bullets",
                [
                    "SAR report, or an exclusion or exemption analysis for each transmitter.",
                    "Maximum tune-up power for each band and operating mode.",
                    "Test separation distances and the justification for each.",
                    "Simultaneous transmission analysis (sum of SAR and, if needed, SPLSR).",
                    "User manual text on body-worn separation distances and approved accessories.",
                ],
            ),
        ],
    ],
}

KDB_784748 = {
    "file": "kdb_784748_labelling.pdf",
    "title": "KDB 784748 D01 — Labelling Guidelines for Part 15 and Part 18 Devices (Sample Summary)",
    "footer": "KDB 784748 D01 (sample)",
    "subject": "Labelling guidance for Part 15 and Part 18 devices",
    "pages": [
        [
            ("p", "Office of Engineering and Technology, Laboratory Division."),
            ("p", DISCLAIMER),
            ("h2", "1. Purpose"),
            (
                "p",
                "This publication summarizes the labelling requirements for devices authorized "
                "under Part 15 and Part 18 and gives practical guidance on label content, "
                "placement, and size. The rules themselves are in Sections 2.925, 2.926, "
                "2.935, 2.1077, and 15.19.",
            ),
            ("h2", "2. Devices subject to certification"),
            (
                "p",
                "A certified device must be labelled with its FCC ID (Section 2.925) and with "
                "the applicable compliance statement of Section 15.19(a). The FCC ID is "
                'preceded by the words "FCC ID" in capital letters, on a single line, and '
                "must be legible without magnification. The label must be permanently affixed: "
                "etched, engraved, indelibly printed, or a permanent nameplate. A paper label "
                "that can be easily removed is not acceptable.",
            ),
            (
                "p",
                "The FCC ID consists of a grantee code (three characters for older grantees, "
                "five characters for codes issued since May 2013) followed by an equipment "
                "product code of up to 14 characters. Example: FCC ID: 2ABCD-SENSOR01.",
            ),
            ("h2", "3. Devices subject to Supplier's Declaration of Conformity"),
            (
                "p",
                "A device authorized under Supplier's Declaration of Conformity (SDoC) carries "
                "a unique identifier, such as the trade name and model number, and the "
                "applicable compliance statement. It must not carry anything that could be "
                "confused with an FCC ID. A compliance information statement (Section 2.1077) "
                "giving the name, U.S. address, and telephone number or internet contact of "
                "the responsible party must accompany the product.",
            ),
            (
                "p",
                "The FCC logo is optional for SDoC devices. It has not been required since the "
                "SDoC procedure took effect on November 2, 2017.",
            ),
        ],
        [
            ("h2", "4. Small devices"),
            (
                "p",
                "Under Section 15.19(a)(5), when a device is too small for the compliance "
                "statement, the statement may be placed in the user manual or on the "
                "packaging. As a rule of thumb, a device smaller than the palm of the hand is "
                "considered too small for the full compliance statement. The FCC ID must still "
                "appear on the device itself.",
            ),
            (
                "p",
                "Only if the device is unquestionably too small for the FCC ID to be printed "
                "legibly in at least 4-point type may the FCC ID be placed in the user manual "
                "and on the packaging instead. The label area set aside for the FCC ID may not "
                "be reduced merely because other product or regulatory markings crowd the "
                "label.",
            ),
            ("h2", "5. Type size"),
            (
                "p",
                "Label text should be in a type size large enough to be readily legible, "
                "consistent with the dimensions of the equipment and the label. The text does "
                "not need to be larger than 8-point type.",
            ),
            ("h2", "6. Multi-section devices and accessories"),
            (
                "p",
                "Where a device consists of several sections connected by wires and marketed "
                "together, the compliance statement is required only on the main control unit "
                "(Section 15.19(a)(4)). Each separately marketed transmitter needs its own FCC "
                "ID label.",
            ),
        ],
        [
            ("h2", "7. Modular transmitters installed in host products"),
            (
                "p",
                "When a certified modular transmitter is installed in a host product and the "
                "module's FCC ID label is not visible from outside the host, the host must "
                'carry a label that refers to the enclosed module, for example "Contains '
                'Transmitter Module FCC ID: XYZ-MOD1" or "Contains FCC ID: XYZ-MOD1". Any '
                "similar wording that expresses the same meaning may be used. The host must "
                "also carry the Section 15.19 compliance statement that applies to the host as "
                "a whole.",
            ),
            (
                "p",
                "If the host manufacturer has certified the combination under its own FCC ID, "
                'the host label shows the host FCC ID, and the "Contains FCC ID" statement '
                "is optional.",
            ),
            ("h2", "8. Electronic labelling"),
            (
                "p",
                "A device with an integrated display, or a device that can operate only with a "
                "device that has a display, may show its FCC ID and required statements "
                "electronically (Section 2.935). The information must be reachable in no more "
                "than three steps from the settings menu, without special codes, accessories, "
                "or permissions. Users must be told how to find the information in the user "
                "manual, in a packaging insert, or on a product web site.",
            ),
            (
                "p",
                "At the time of importation, marketing, and sale, a device that uses "
                "electronic labelling must also show its FCC ID on the packaging or on a "
                "removable adhesive label on the device, so that the product can be "
                "identified before it is switched on.",
            ),
            ("h3", "Summary of common cases"),
            (
                "table",
                [
                    ["Device", "Identifier", "Compliance statement"],
                    [
                        "Certified transmitter, ordinary size",
                        "FCC ID on a permanent label",
                        "On the device",
                    ],
                    [
                        "Certified transmitter smaller than the palm of the hand",
                        "FCC ID on the device",
                        "User manual or packaging",
                    ],
                    [
                        "SDoC digital device",
                        "Unique identifier (trade name and model)",
                        "On the device; compliance information supplied with the product",
                    ],
                    [
                        "Host with a certified module inside",
                        '"Contains FCC ID: XYZ-MOD1" on the host',
                        "On the host",
                    ],
                    [
                        "Smartphone using electronic labelling",
                        "FCC ID on screen within three steps; packaging label at import",
                        "On screen or in the user manual",
                    ],
                ],
            ),
        ],
    ],
}

KDB_996369 = {
    "file": "kdb_996369_modular_transmitters.docx",
    "title": "KDB 996369 — Modular Transmitter Integration Guidance (Sample Summary)",
    "subject": "Modular transmitter approval and host integration",
    "pages": [
        [
            ("p", DISCLAIMER),
            ("h2", "1. Scope"),
            (
                "p",
                "This publication explains how modular transmitters are approved and how host "
                "product manufacturers integrate them. A modular transmitter is a "
                "self-contained transmitter that is certified on its own, with its own FCC ID, "
                "so that it can be installed in different host products without a new "
                "certification for each host. The modular approval requirements are in "
                "Section 15.212 of the FCC rules.",
            ),
            ("h2", "2. Requirements for a single modular approval"),
            (
                "p",
                "To receive a single (full) modular approval, a module must meet all eight of "
                "the following requirements:",
            ),
            (
                "numbers",
                [
                    "The radio elements of the module must have their own RF shielding, so that the "
                    "host does not affect the module's emissions.",
                    "The module must have buffered modulation and data inputs, so that data from the "
                    "host cannot cause the module to exceed its authorized parameters.",
                    "The module must have its own power supply regulation.",
                    "The module must meet the antenna requirements of Sections 15.203 and 15.204: a "
                    "permanently attached antenna or a unique antenna connector, and only antennas "
                    "listed in the grant.",
                    "The module must be tested for compliance in a stand-alone configuration, that "
                    "is, not installed inside another device, with any needed interface provided by "
                    "a test fixture.",
                    "The module must be labelled with its own FCC ID. If the FCC ID is not visible "
                    'when the module is installed, the host must carry a label such as "Contains '
                    'FCC ID: XYZ-MOD1".',
                    "The module must comply with all rules that apply to the transmitter, including "
                    "any conditions on use, and the grantee must give host manufacturers "
                    "instructions for keeping the module in compliance.",
                    "The module must comply with the RF exposure requirements for the conditions of "
                    "use described in its grant.",
                ],
            ),
        ],
        [
            ("h2", "3. Limited modular approval"),
            (
                "p",
                "A module that does not meet one or more of the eight requirements, for example "
                "a module without its own shielding or without power supply regulation, may "
                "receive a limited modular approval (LMA). An LMA restricts the module to host "
                "products that the grantee specifically approves, and the grantee remains "
                "responsible for ensuring that each host installation complies. The filing "
                "must describe how the grantee will control the hosts in which the module is "
                "installed.",
            ),
            ("h2", "4. Host product manufacturer responsibilities"),
            (
                "p",
                "The host manufacturer is responsible for the compliance of the final product. "
                "Installing a certified module does not relieve the host of its own "
                "requirements: the host's digital circuitry must still meet the Part 15 "
                "Subpart B limits and be authorized under Supplier's Declaration of Conformity "
                "or certification, and the host must be tested with the module installed and "
                "transmitting to confirm that the combination does not produce emissions above "
                "the limits.",
            ),
            (
                "p",
                "The host manufacturer must follow the integration instructions supplied by "
                "the module grantee, use only the antennas listed in the module's grant, and "
                "must not give end users any means to change the module's RF parameters.",
            ),
            (
                "p",
                "The host user manual must include the regulatory statements that apply to the "
                "host, including the Section 15.19 compliance statement, the Section 15.21 "
                "warning about unauthorized modifications, and any RF exposure instructions "
                "required by the module grant. The user manual must not tell end users how to "
                "install or remove the module.",
            ),
        ],
        [
            ("h2", "5. RF exposure and co-location"),
            (
                "p",
                "Most modules are approved for mobile exposure conditions, meaning a separation "
                "distance of at least 20 cm between the antenna and the body of the user. A "
                "host that places the module's antenna within 20 cm of the user (portable use) "
                "falls outside the grant conditions, and a Class II permissive change or a new "
                "certification is required, usually with SAR testing.",
            ),
            (
                "p",
                "A module that transmits at the same time as another transmitter in the same "
                "host is co-located with it. Co-location must be evaluated for RF exposure; if "
                "the combination is not covered by the existing grants, a Class II permissive "
                "change or a new certification is needed.",
            ),
            ("h2", "6. Antennas"),
            (
                "p",
                "The host may use only the antenna types listed in the module's grant, or "
                "antennas of the same type with equal or lower gain. A trace (printed circuit "
                "board) antenna designed into the host must follow the reference design in the "
                "grantee's integration instructions exactly; a different trace layout requires "
                "a Class II permissive change or a new certification.",
            ),
            ("h2", "7. Changing the FCC ID"),
            (
                "p",
                "A host manufacturer that wants to take responsibility for the module under "
                "its own FCC ID may file a change in identification under Section 2.933, with "
                "the module grantee's permission. The host manufacturer then becomes the "
                "grantee of the new FCC ID and is responsible for its compliance.",
            ),
            ("h2", "8. Contents of the integration instructions"),
            (
                "table",
                [
                    ["Item", "What the grantee must describe"],
                    [
                        "List of applicable FCC rules",
                        "For example Part 15 Subpart C, Section 15.247",
                    ],
                    [
                        "Specific operational use conditions",
                        "Limits on use, such as fixed point-to-point operation only",
                    ],
                    [
                        "Limited module procedures",
                        "How the grantee approves hosts under a limited modular approval",
                    ],
                    [
                        "Trace antenna designs",
                        "Layout, dimensions, and materials of the reference design",
                    ],
                    [
                        "RF exposure considerations",
                        "Required separation distance and co-location limits",
                    ],
                    ["Antennas", "Type, gain, and connector of each approved antenna"],
                    [
                        "Label and compliance information",
                        'The "Contains FCC ID" wording for the host label',
                    ],
                    [
                        "Test modes",
                        "How to put the module into continuous transmit mode for host testing",
                    ],
                    [
                        "Additional testing",
                        "Statement that the host must still meet Part 15 Subpart B",
                    ],
                ],
            ),
        ],
    ],
}

KDB_178919 = {
    "file": "kdb_178919_permissive_changes.docx",
    "title": "KDB 178919 — Permissive Change Policy (Sample Summary)",
    "subject": "Permissive changes to certified equipment",
    "pages": [
        [
            ("p", DISCLAIMER),
            ("h2", "1. Purpose"),
            (
                "p",
                "Once a device is certified, the grantee may change it without obtaining a new "
                "FCC ID only through the permissive change procedures of Section 2.1043. This "
                "publication summarizes the three classes of permissive change and the "
                "situations that require a new certification.",
            ),
            ("h2", "2. Class I permissive changes"),
            (
                "p",
                "A Class I permissive change is a change that does not degrade the "
                "characteristics reported by the grantee and accepted by the Commission when "
                "the certification was granted. No filing with the Commission is required for "
                "a Class I change, but the grantee must keep records showing that the change "
                "did not degrade performance.",
            ),
            (
                "p",
                "Examples include replacing a component with an equivalent part from another "
                "supplier, cosmetic changes to the enclosure that do not affect emissions, and "
                "adding an antenna of the same type with equal or lower gain.",
            ),
            ("h2", "3. Class II permissive changes"),
            (
                "p",
                "A Class II permissive change is a change that degrades the performance "
                "characteristics reported at the time of certification while the equipment "
                "still meets the rules, for example an increase in spurious emissions, a "
                "higher-gain antenna, or a change that affects RF exposure. The grantee must "
                "file a Class II permissive change application with test data showing that "
                "the modified equipment complies, and the equipment keeps its FCC ID.",
            ),
            (
                "p",
                "Only the grantee, or its authorized agent, may file a permissive change. A "
                "party that is not the grantee must obtain a new FCC ID or a change in "
                "identification under Section 2.933. The modified equipment may not be "
                "marketed under the existing grant until the Class II permissive change has "
                "been granted.",
            ),
        ],
        [
            ("h2", "4. Class III permissive changes"),
            (
                "p",
                "A Class III permissive change applies only to software defined radios. It "
                "covers software changes that alter the frequency range, the modulation type, "
                "or the maximum output power (either increasing or decreasing it) outside the "
                "parameters previously approved, or that change the conditions under which the "
                "software was approved. The grantee files the change with test data showing "
                "compliance with the new parameters, and the equipment keeps its FCC ID.",
            ),
            ("h2", "5. Changes that require a new certification"),
            (
                "p",
                "A permissive change may not be used when the basic frequency-determining and "
                "stabilizing circuitry (including clock or data rates), the frequency "
                "multiplication stages, the basic modulator circuit, or the maximum power or "
                "field strength ratings are changed. Such changes require a new application "
                "for certification and a new FCC ID.",
            ),
            ("h2", "6. Examples"),
            (
                "table",
                [
                    ["Change", "Classification"],
                    [
                        "Replace a capacitor with an equivalent part; emissions unchanged or lower",
                        "Class I: no filing, keep records",
                    ],
                    ["Add an antenna of the same type with lower gain", "Class I"],
                    [
                        "Add an antenna of the same type with higher gain",
                        "Class II: file test data",
                    ],
                    [
                        "Re-layout of the circuit board that raises spurious emissions but still meets "
                        "the limits",
                        "Class II",
                    ],
                    [
                        "Module used in a new host with portable (within 20 cm) exposure conditions",
                        "Class II",
                    ],
                    ["Software defined radio update that adds a new modulation type", "Class III"],
                    [
                        "New oscillator frequency or higher maximum power rating",
                        "New certification with a new FCC ID",
                    ],
                ],
            ),
            ("h2", "7. Filing notes"),
            (
                "p",
                "Class II and Class III permissive changes are filed through a Telecommunication "
                "Certification Body in the same way as an original application, referencing "
                "the existing FCC ID. The filing should describe every change made since the "
                "last grant and include the new or updated test reports, photographs, and user "
                "manual pages that the change affects.",
            ),
        ],
    ],
}

PDF_DOCS = [KDB_447498, KDB_784748]
DOCX_DOCS = [KDB_996369, KDB_178919]


# ---------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------


def build_pdf(doc: dict, out_dir: Path) -> Path:
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_LEFT
    from reportlab.lib.pagesizes import LETTER
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import inch
    from reportlab.platypus import (
        ListFlowable,
        ListItem,
        PageBreak,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    styles = getSampleStyleSheet()
    title_style = ParagraphStyle(
        "KdbTitle",
        parent=styles["Title"],
        fontSize=16,
        leading=20,
        alignment=TA_LEFT,
        spaceAfter=10,
    )
    h2 = ParagraphStyle(
        "KdbH2", parent=styles["Heading2"], fontSize=13, leading=16, spaceBefore=10, spaceAfter=4
    )
    h3 = ParagraphStyle(
        "KdbH3", parent=styles["Heading3"], fontSize=11, leading=14, spaceBefore=6, spaceAfter=3
    )
    body = ParagraphStyle(
        "KdbBody", parent=styles["BodyText"], fontSize=10.5, leading=14, spaceAfter=6
    )
    cell = ParagraphStyle("KdbCell", parent=body, fontSize=9.5, leading=12, spaceAfter=0)

    out = out_dir / doc["file"]
    footer = doc["footer"]

    def on_page(canvas, pdf_doc):
        canvas.saveState()
        canvas.setFont("Helvetica", 8.5)
        canvas.drawString(inch, 0.6 * inch, footer)
        canvas.drawRightString(LETTER[0] - inch, 0.6 * inch, f"Page {pdf_doc.page}")
        canvas.restoreState()

    story = [Paragraph(escape(doc["title"]), title_style)]
    for i, page in enumerate(doc["pages"]):
        if i:
            story.append(PageBreak())
        for kind, content in page:
            if kind == "h2":
                story.append(Paragraph(escape(content), h2))
            elif kind == "h3":
                story.append(Paragraph(escape(content), h3))
            elif kind == "p":
                story.append(Paragraph(escape(content), body))
            elif kind in ("bullets", "numbers"):
                items = [ListItem(Paragraph(escape(t), body), leftIndent=12) for t in content]
                if kind == "bullets":
                    story.append(
                        ListFlowable(items, bulletType="bullet", start="\u2022", leftIndent=14)
                    )
                else:
                    story.append(ListFlowable(items, bulletType="1", leftIndent=14))
            elif kind == "table":
                data = [[Paragraph(escape(c), cell) for c in row] for row in content]
                ncols = len(content[0])
                width = (LETTER[0] - 2 * inch) / ncols
                table = Table(data, colWidths=[width] * ncols, repeatRows=1)
                table.setStyle(
                    TableStyle(
                        [
                            ("GRID", (0, 0), (-1, -1), 0.5, colors.grey),
                            ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey),
                            ("VALIGN", (0, 0), (-1, -1), "TOP"),
                        ]
                    )
                )
                story.append(Spacer(1, 4))
                story.append(table)
                story.append(Spacer(1, 6))
            else:
                raise ValueError(f"unknown block kind {kind!r}")

    pdf = SimpleDocTemplate(
        str(out),
        pagesize=LETTER,
        leftMargin=inch,
        rightMargin=inch,
        topMargin=inch,
        bottomMargin=inch,
        title=doc["title"],
        author="Sample corpus (not an official FCC document)",
        subject=doc["subject"],
        creator="scripts/make_sample_docs.py",
        invariant=1,
    )
    pdf.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return out


# ---------------------------------------------------------------------------
# DOCX
# ---------------------------------------------------------------------------


def _normalize_zip(data: bytes) -> bytes:
    """Rewrite a zip archive with fixed timestamps and a stable entry order."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            new = zipfile.ZipInfo(info.filename, date_time=ZIP_DATE)
            new.compress_type = zipfile.ZIP_DEFLATED
            new.external_attr = 0o644 << 16
            dst.writestr(new, src.read(info.filename))
    return buf.getvalue()


def build_docx(doc: dict, out_dir: Path) -> Path:
    import docx
    from docx.enum.text import WD_BREAK

    d = docx.Document()
    props = d.core_properties
    props.title = doc["title"]
    props.subject = doc["subject"]
    props.author = "Sample corpus (not an official FCC document)"
    props.last_modified_by = "scripts/make_sample_docs.py"
    props.comments = "Illustrative restatement written for a demonstration retrieval system."
    props.created = FIXED_DATE
    props.modified = FIXED_DATE
    props.last_printed = FIXED_DATE
    props.revision = 1

    d.add_heading(doc["title"], level=0)
    for i, page in enumerate(doc["pages"]):
        if i:
            d.add_paragraph().add_run().add_break(WD_BREAK.PAGE)
        for kind, content in page:
            if kind == "h2":
                d.add_heading(content, level=1)
            elif kind == "h3":
                d.add_heading(content, level=2)
            elif kind == "p":
                d.add_paragraph(content)
            elif kind == "bullets":
                for t in content:
                    d.add_paragraph(t, style="List Bullet")
            elif kind == "numbers":
                for t in content:
                    d.add_paragraph(t, style="List Number")
            elif kind == "table":
                table = d.add_table(rows=len(content), cols=len(content[0]))
                table.style = "Table Grid"
                for r, row in enumerate(content):
                    for c, text in enumerate(row):
                        table.cell(r, c).text = text
                        if r == 0:
                            for run in table.cell(r, c).paragraphs[0].runs:
                                run.bold = True
            else:
                raise ValueError(f"unknown block kind {kind!r}")

    buf = io.BytesIO()
    d.save(buf)
    out = out_dir / doc["file"]
    out.write_bytes(_normalize_zip(buf.getvalue()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output directory (default: data/samples)"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for doc in PDF_DOCS:
        print("wrote", build_pdf(doc, args.out))
    for doc in DOCX_DOCS:
        print("wrote", build_docx(doc, args.out))


if __name__ == "__main__":
    main()
