"""Regenerate the clinical-ner corpus files: `python src/tunelab/data/corpora_files/clinical_ner/build.py`.

The corpus is synthetic and written for tunelab (see README.md): hand-written sentences, sentences
without entities, and sentences composed from hand-written templates and vocabulary (each template
used a few times at most, drugs paired with their own doses, indications and side effects). It
runs with a fixed seed, so the committed files are exactly what this script writes; tunelab never
runs it at runtime.

Sentences are written in a small markup: `[metformin|D]`, `[500 mg twice daily|Q]`,
`[type 2 diabetes|C]` for DRUG, DOSE and CONDITION. Words are split like tunelab's span layout
(`tunelab.data.tags.split_words`), and every span must cover whole words.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[3]))  # src/, so the script runs from a checkout
from tunelab.data.tags import split_words

SEED = 20240601
LABELS = {"D": "DRUG", "Q": "DOSE", "C": "CONDITION"}
MARK = re.compile(r"\[([^\[\]|]+)\|([DQC])\]")
TEMPLATE_USES = 4  # at most this many sentences from one template


# --------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class Drug:
    name: str
    amounts: tuple[str, ...]
    freqs: tuple[str, ...]
    inds: tuple[str, ...]  # indications (conditions it treats)
    kind: str  # chronic | course | prn
    routes: tuple[str, ...] = ("",)  # "" = no route written
    sides: tuple[str, ...] = ()  # side effects that lead to holding or stopping it
    brand: str = ""
    days: tuple[int, ...] = (5, 7, 10)  # usual course lengths


# Drugs of one class are not listed together (two statins in one sentence read as an error).
CLASSES = [
    {"omeprazole", "pantoprazole"}, {"atorvastatin", "rosuvastatin"},
    {"metoprolol tartrate", "metoprolol succinate", "carvedilol"}, {"lisinopril", "losartan"},
    {"apixaban", "warfarin"}, {"sertraline", "escitalopram", "duloxetine"},
]


DRUGS = [
    Drug("metformin", ("500 mg", "850 mg", "1000 mg"), ("twice daily", "bid", "BID"),
         ("type 2 diabetes", "DM2", "T2DM"), "chronic", ("", "", "PO"), ("diarrhea", "GI upset")),
    Drug("lisinopril", ("10 mg", "20 mg", "40 mg"), ("daily", "once daily"), ("hypertension", "HTN"), "chronic",
         sides=("dry cough", "angioedema", "hyperkalemia"), brand="Zestril"),
    Drug("amlodipine", ("5 mg", "10 mg"), ("daily",), ("hypertension", "HTN"), "chronic",
         sides=("ankle edema", "lower extremity edema"), brand="Norvasc"),
    Drug("atorvastatin", ("20 mg", "40 mg", "80 mg"), ("nightly", "at bedtime", "daily"),
         ("hyperlipidemia", "HLD", "coronary artery disease"), "chronic", sides=("myalgias",), brand="Lipitor"),
    Drug("rosuvastatin", ("10 mg", "20 mg"), ("daily",), ("hyperlipidemia", "CAD"), "chronic", sides=("myalgias",)),
    Drug("metoprolol tartrate", ("12.5 mg", "25 mg", "50 mg"), ("bid", "twice daily", "q12h"),
         ("atrial fibrillation", "hypertension"), "chronic", ("", "PO"), ("bradycardia", "fatigue")),
    Drug("metoprolol succinate", ("25 mg", "50 mg", "100 mg"), ("daily",), ("heart failure", "HFrEF"), "chronic",
         sides=("bradycardia",)),
    Drug("apixaban", ("2.5 mg", "5 mg"), ("bid", "twice daily"), ("atrial fibrillation", "AFib", "DVT"), "chronic",
         sides=("epistaxis", "GI bleeding"), brand="Eliquis"),
    Drug("warfarin", ("2.5 mg", "5 mg", "7.5 mg"), ("daily", "nightly"),
         ("atrial fibrillation", "pulmonary embolism", "DVT"), "chronic", sides=("epistaxis", "hematuria"),
         brand="Coumadin"),
    Drug("furosemide", ("20 mg", "40 mg", "80 mg"), ("daily", "bid"), ("heart failure", "CHF", "edema"), "chronic",
         ("", "PO"), ("hypokalemia", "acute kidney injury"), "Lasix"),
    Drug("levothyroxine", ("50 mcg", "75 mcg", "100 mcg", "112 mcg"), ("daily", "every morning"),
         ("hypothyroidism",), "chronic", sides=("palpitations",), brand="Synthroid"),
    Drug("omeprazole", ("20 mg", "40 mg"), ("daily", "bid"), ("GERD", "acid reflux"), "chronic",
         sides=("diarrhea",), brand="Prilosec"),
    Drug("pantoprazole", ("40 mg",), ("daily", "bid"), ("GERD", "peptic ulcer disease"), "chronic", ("", "PO")),
    Drug("sertraline", ("25 mg", "50 mg", "100 mg"), ("daily",), ("depression", "anxiety", "PTSD"), "chronic",
         sides=("nausea", "insomnia"), brand="Zoloft"),
    Drug("escitalopram", ("10 mg", "20 mg"), ("daily",), ("generalized anxiety disorder", "depression"), "chronic",
         sides=("nausea",), brand="Lexapro"),
    Drug("gabapentin", ("100 mg", "300 mg", "600 mg"), ("tid", "three times daily", "at bedtime"),
         ("neuropathic pain", "diabetic neuropathy", "postherpetic neuralgia"), "chronic",
         sides=("sedation", "dizziness"), brand="Neurontin"),
    Drug("insulin glargine", ("10 units", "18 units", "24 units"), ("at bedtime", "nightly", "daily"),
         ("type 2 diabetes", "type 1 diabetes", "DM2"), "chronic", ("", "SC", "subcutaneously"), ("hypoglycemia",),
         "Lantus"),
    Drug("aspirin", ("81 mg", "325 mg"), ("daily",), ("coronary artery disease", "CAD"), "chronic",
         sides=("GI bleeding",)),
    Drug("clopidogrel", ("75 mg",), ("daily",), ("CAD", "peripheral artery disease"), "chronic",
         sides=("bruising",), brand="Plavix"),
    Drug("hydrochlorothiazide", ("12.5 mg", "25 mg"), ("daily",), ("hypertension", "HTN"), "chronic",
         sides=("hyponatremia", "gout")),
    Drug("losartan", ("25 mg", "50 mg", "100 mg"), ("daily",), ("hypertension", "diabetic nephropathy"), "chronic",
         sides=("hyperkalemia", "dizziness"), brand="Cozaar"),
    Drug("spironolactone", ("25 mg", "50 mg"), ("daily",), ("heart failure", "ascites"), "chronic",
         sides=("hyperkalemia", "gynecomastia")),
    Drug("allopurinol", ("100 mg", "300 mg"), ("daily",), ("gout",), "chronic", sides=("rash",)),
    Drug("tamsulosin", ("0.4 mg",), ("daily", "at bedtime"), ("BPH", "benign prostatic hyperplasia"), "chronic",
         sides=("orthostatic hypotension", "dizziness"), brand="Flomax"),
    Drug("montelukast", ("10 mg",), ("nightly", "daily"), ("asthma", "allergic rhinitis"), "chronic",
         sides=("nightmares",), brand="Singulair"),
    Drug("levetiracetam", ("500 mg", "750 mg", "1000 mg"), ("bid", "twice daily"), ("seizure disorder", "epilepsy"),
         "chronic", sides=("irritability",), brand="Keppra"),
    Drug("carvedilol", ("3.125 mg", "6.25 mg", "12.5 mg"), ("bid", "twice daily"),
         ("heart failure", "ischemic cardiomyopathy"), "chronic", sides=("hypotension", "dizziness"), brand="Coreg"),
    Drug("diltiazem", ("120 mg", "180 mg", "240 mg"), ("daily",), ("atrial fibrillation", "hypertension"), "chronic",
         sides=("constipation", "bradycardia")),
    Drug("donepezil", ("5 mg", "10 mg"), ("at bedtime", "nightly"), ("Alzheimer's disease", "dementia"), "chronic",
         sides=("vivid dreams", "bradycardia"), brand="Aricept"),
    Drug("tiotropium", ("18 mcg",), ("daily",), ("COPD",), "chronic", ("", "inhaled"),
         ("dry mouth",), "Spiriva"),
    Drug("quetiapine", ("25 mg", "50 mg", "100 mg"), ("at bedtime", "qHS"), ("bipolar disorder", "schizophrenia"),
         "chronic", sides=("sedation", "weight gain"), brand="Seroquel"),
    Drug("duloxetine", ("30 mg", "60 mg"), ("daily",), ("fibromyalgia", "depression", "diabetic neuropathy"),
         "chronic", sides=("nausea",), brand="Cymbalta"),
    Drug("empagliflozin", ("10 mg", "25 mg"), ("daily",), ("type 2 diabetes", "heart failure"), "chronic",
         sides=("yeast infections", "dehydration"), brand="Jardiance"),
    # courses of treatment
    Drug("amoxicillin", ("500 mg", "875 mg"), ("tid", "bid", "three times daily"),
         ("otitis media", "strep pharyngitis", "sinusitis"), "course", sides=("rash", "diarrhea"), days=(5, 7, 10)),
    Drug("amoxicillin-clavulanate", ("875 mg", "875-125 mg"), ("bid", "twice daily"),
         ("sinusitis", "cellulitis", "aspiration pneumonia"), "course", sides=("diarrhea",), brand="Augmentin",
         days=(7, 10)),
    Drug("azithromycin", ("250 mg", "500 mg"), ("daily",), ("community-acquired pneumonia", "bronchitis"), "course",
         brand="Zithromax", days=(3, 5)),
    Drug("ceftriaxone", ("1 g", "2 g"), ("daily", "q24h"), ("pneumonia", "pyelonephritis", "bacteremia"), "course",
         ("IV",), days=(5, 7, 14)),
    Drug("vancomycin", ("1 g", "1.25 g", "15 mg/kg"), ("q12h",), ("MRSA bacteremia", "cellulitis", "osteomyelitis"),
         "course", ("IV",), ("acute kidney injury",), days=(7, 14)),
    Drug("nitrofurantoin", ("100 mg",), ("bid", "twice daily"), ("UTI", "urinary tract infection", "cystitis"),
         "course", sides=("nausea",), brand="Macrobid", days=(5, 7)),
    Drug("ciprofloxacin", ("250 mg", "500 mg"), ("bid", "q12h"), ("UTI", "pyelonephritis", "prostatitis"), "course",
         sides=("tendon pain",), days=(3, 7)),
    Drug("doxycycline", ("100 mg",), ("bid", "twice daily"), ("Lyme disease", "cellulitis", "acne"), "course",
         sides=("photosensitivity",), days=(10, 14, 21)),
    Drug("cephalexin", ("500 mg",), ("qid", "four times daily", "bid"), ("cellulitis", "UTI"), "course",
         brand="Keflex", days=(5, 7)),
    Drug("prednisone", ("20 mg", "40 mg", "60 mg"), ("daily",),
         ("COPD exacerbation", "asthma exacerbation", "gout flare"),
         "course", sides=("hyperglycemia", "insomnia"), days=(5, 7)),
    Drug("valacyclovir", ("500 mg", "1 g"), ("bid", "tid"), ("herpes zoster", "shingles", "genital herpes"),
         "course", brand="Valtrex", days=(7, 10)),
    Drug("oseltamivir", ("75 mg",), ("bid", "twice daily"), ("influenza",), "course", brand="Tamiflu", days=(5,)),
    Drug("metronidazole", ("500 mg",), ("tid", "bid", "q8h"), ("bacterial vaginosis", "trichomoniasis"), "course",
         sides=("metallic taste", "nausea"), brand="Flagyl", days=(7,)),
    Drug("colchicine", ("0.6 mg",), ("daily", "bid"), ("gout flare", "pericarditis"), "course", sides=("diarrhea",),
         days=(3, 7)),
    # as needed
    Drug("acetaminophen", ("500 mg", "650 mg", "1 g"), ("q6h PRN", "every 6 hours as needed", "q8h PRN"),
         ("pain", "fever", "headache"), "prn", ("", "PO"), brand="Tylenol"),
    Drug("ibuprofen", ("400 mg", "600 mg", "800 mg"), ("q8h PRN", "every 8 hours as needed", "tid PRN"),
         ("knee pain", "back pain", "dysmenorrhea"), "prn", sides=("dyspepsia",), brand="Motrin"),
    Drug("oxycodone", ("5 mg", "10 mg"), ("q4h PRN", "q6h PRN", "every 4 hours as needed"),
         ("pain", "hip pain", "back pain"), "prn", sides=("constipation", "somnolence")),
    Drug("morphine", ("2 mg", "4 mg"), ("q3h PRN", "q4h PRN"), ("pain",), "prn", ("IV",), ("pruritus",)),
    Drug("ondansetron", ("4 mg", "8 mg"), ("q8h PRN", "q6h PRN", "every 8 hours as needed"), ("nausea", "vomiting"),
         "prn", ("", "PO", "IV"), brand="Zofran"),
    Drug("albuterol", ("2 puffs", "2.5 mg"), ("q4h PRN", "q6h PRN", "every 4 hours as needed"),
         ("wheezing", "shortness of breath", "asthma"), "prn", sides=("tremor",)),
    Drug("lorazepam", ("0.5 mg", "1 mg"), ("q6h PRN", "q8h PRN"), ("anxiety", "alcohol withdrawal"), "prn",
         ("", "PO"), ("sedation",), "Ativan"),
    Drug("nitroglycerin", ("0.4 mg",), ("q5 min PRN", "every 5 minutes as needed"), ("chest pain", "angina"),
         "prn", ("SL", "sublingual"), ("headache",)),
    Drug("hydroxyzine", ("25 mg", "50 mg"), ("q6h PRN", "tid PRN"), ("itching", "anxiety"), "prn",
         sides=("drowsiness",)),
    Drug("senna", ("8.6 mg", "2 tablets"), ("at bedtime PRN", "nightly PRN"), ("constipation",), "prn"),
    Drug("loperamide", ("2 mg",), ("after each loose stool", "q4h PRN"), ("diarrhea",), "prn", brand="Imodium"),
]
BY_KIND = {kind: [d for d in DRUGS if d.kind == kind] for kind in ("chronic", "course", "prn")}

HISTORY = [
    "hypertension", "HTN", "type 2 diabetes", "DM2", "hyperlipidemia", "HLD", "CAD", "coronary artery disease",
    "CHF", "heart failure with preserved ejection fraction", "COPD", "asthma", "CKD stage 3", "chronic kidney disease",
    "atrial fibrillation", "AFib", "obstructive sleep apnea", "OSA", "GERD", "hypothyroidism", "osteoarthritis",
    "depression", "anxiety", "BPH", "gout", "prior stroke", "peripheral neuropathy", "obesity", "migraines",
    "iron deficiency anemia", "cirrhosis", "hepatitis C", "breast cancer", "prostate cancer", "rheumatoid arthritis",
    "Parkinson's disease", "seizure disorder", "DVT", "pulmonary embolism", "osteoporosis",
    "alcohol use disorder", "HIV", "sickle cell disease", "glaucoma", "macular degeneration",
]
SYMPTOMS = [
    "chest pain", "shortness of breath", "dyspnea", "cough", "fever", "chills", "nausea", "vomiting",
    "abdominal pain", "diarrhea", "dizziness", "syncope", "palpitations", "headache", "fatigue", "leg swelling",
    "dysuria", "hematuria", "back pain", "rash", "confusion", "weakness", "orthopnea", "hemoptysis", "melena",
    "weight loss", "night sweats", "blurred vision", "sore throat", "joint pain",
]
ACUTE = [
    "community-acquired pneumonia", "CHF exacerbation", "COPD exacerbation", "NSTEMI", "sepsis", "DKA",
    "pyelonephritis", "cellulitis", "acute kidney injury", "upper GI bleed", "small bowel obstruction",
    "acute pancreatitis", "hip fracture", "pulmonary embolism", "ischemic stroke", "hyponatremia",
    "C. difficile colitis",
]
FAMILY = ["breast cancer", "colon cancer", "coronary artery disease", "type 2 diabetes", "ovarian cancer",
          "early cardiac death"]
FEMALE_RELATIVES = {"ovarian cancer", "breast cancer"}  # named only for female relatives
ALLERGENS = ["penicillin", "codeine", "amoxicillin", "lisinopril", "morphine", "ciprofloxacin", "aspirin",
             "sulfamethoxazole", "ibuprofen", "cephalexin"]
REACTIONS = ["rash", "hives", "angioedema", "anaphylaxis", "nausea", "itching", "swelling of the lips"]
RELATIVES = ["mother", "father", "sister", "brother", "maternal grandmother"]
FEMALE = {"mother", "sister", "maternal grandmother"}
PEOPLE = ["man", "woman", "male", "female"]
MALE_ONLY = {"prostate cancer", "BPH"}
FEMALE_ONLY = {"breast cancer"}  # not only, but rare enough in men to read oddly here
FOLLOW = ["her PCP", "his PCP", "primary care", "clinic"]

# --------------------------------------------------------------------------- templates
#
# Slots: {drug} {dose} {amount} {freq} {ind} {side} bind to one drug of the template's kind
# (drug2... a second, different drug); {cond} {cond2} {cond3} history; {sym} {sym2} {sym3} symptoms;
# {acute}; {age} {person} {days} {weeks} {family} {relative} {allergen} {reaction} {follow}.
# Entity slots expand to markup; a template starting with a slot is capitalized.

TEMPLATES: dict[str, list[str]] = {
    "chronic": [
        "Started {drug} {dose} for {ind}.",
        "Continue {drug} {dose} for {ind}.",
        "Titrating {drug} up to {dose_up} for {ind}.",
        "{drug} {dose} was held on admission and resumed at discharge.",
        "Patient reports good adherence to {drug} {dose}.",
        "Has not taken {drug} for the past {weeks} weeks because of cost.",
        "Resume home {drug} {dose}.",
        "Holding {drug} given {side}.",
        "Discontinued {drug} because of {side}.",
        "Counseled on possible side effects of {drug}, including {side}.",
        "Noted {side} since {drug} was increased to {dose_up}.",
        "Refilled {drug} {dose} for 90 days with 3 refills.",
        "Continue {drug} {dose} and follow up with {follow} in {weeks} weeks.",
        "{ind} remains well controlled on {drug} {dose}.",
        "{ind}: continue {drug} {dose}.",
        "For {ind}, will add {drug} {dose}.",
        "Home medications include {drug} {dose}, {drug2} {dose2}, and {drug3} {dose3}.",
        "Home meds: {drug} {dose}, {drug2} {dose2}, {drug3} {dose3}.",
        "He takes {drug} {dose} for {ind} and {drug2} {dose2} for {ind2}.",
        "She takes {drug} for {ind} and {drug2} for {ind2}.",
        "Discharged on {drug} {dose} and {drug2} {dose2}.",
        "New medications: {drug} {dose}; {drug2} {dose2}.",
        "Not currently taking {drug} despite a history of {ind}.",
        "Declined {drug} due to concern about {side}.",
        "{drug} was decreased to {dose_down} because of {side}.",
        "Stopped {drug} last week after developing {side}.",
    ],
    "course": [
        "Started {drug} {dose} for {days} days for {ind}.",
        "Prescribed {drug} {dose} x {days} days for {ind}.",
        "Treated with {drug} {dose} for presumed {ind}.",
        "{ind} was treated with a {days}-day course of {drug}.",
        "Received {drug} {dose} in the ED for {ind}.",
        "Completed {days} days of {drug} for {ind} without complications.",
        "Will continue {drug} {dose} to complete a {days}-day course.",
        "Empiric {drug} {dose} started for suspected {ind}.",
        "{ind}, improving on {drug} {dose}.",
        "Developed {side} on day {day} of {drug}.",
        "{drug} {dose} through {weekday}, then stop.",
    ],
    "prn": [
        "{drug} {dose} for {ind}.",
        "May take {drug} {dose} for {ind}.",
        "{ind} controlled with {drug} {dose}.",
        "Received two doses of {drug} {amount} overnight for {ind}.",
        "Used {drug} three times in the last 24 hours for {ind}.",
        "Added {drug} {dose} for {ind}.",
        "Continue {drug} {dose} for {ind}, which has improved.",
        "Requesting {drug} for {ind}; given {amount} with relief.",
    ],
    "history": [
        "PMH: {cond}, {cond2}, {cond3}.",
        "Past medical history is significant for {cond}, {cond2}, and {cond3}.",
        "History of {cond} and {cond2}.",
        "{age}-year-old {person} with a history of {cond} and {cond2} presenting with {sym}.",
        "{age} yo {person} with {cond}, {cond2}, and {cond3} who presents with {sym} and {sym2}.",
        "Denies {sym}, {sym2}, or {sym3}.",
        "No {sym} or {sym2}.",
        "Reports {days} days of {sym} and {sym2}.",
        "Admitted for {acute}.",
        "Discharge diagnosis: {acute}.",
        "Principal diagnosis: {acute}; secondary diagnoses: {cond} and {cond2}.",
        "Family history of {family} in her {relative}.",
        "Family history significant for {family} in his {relative}.",
        "Assessment: {acute}, improving.",
        "No known history of {cond}.",
        "{sym} began {days} days ago and has been getting worse.",
        "Endorses {sym} but denies {sym2}.",
        "Patient with {cond} admitted with {acute}.",
    ],
    "allergy": [
        "Allergies: {allergen} ({reaction}).",
        "Allergic to {allergen}, which causes {reaction}.",
        "Reports {reaction} after taking {allergen} in the past.",
        "Allergy to {allergen} listed; reaction was {reaction}.",
    ],
}
# How many sentences to draw from each group (each template at most TEMPLATE_USES times).
DRAWS = {"chronic": 100, "course": 40, "prn": 30, "history": 60, "allergy": 10}

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

# --------------------------------------------------------------------------- hand-written sentences

HANDWRITTEN = """
Started [metformin|D] [500 mg twice daily|Q] for [type 2 diabetes|C].
67 yo M w/ h/o [HTN|C], [HLD|C], and [DM2|C] presenting with [chest pain|C] x 2 days.
[Lasix|D] [40 mg IV bid|Q] with net negative 1.5 L overnight; [dyspnea|C] improving.
Given [aspirin|D] [324 mg|Q] and [nitroglycerin|D] [0.4 mg SL|Q] in the ED with partial relief of [chest pain|C].
Pt reports [nausea|C] after starting [metformin|D], now taking it with food.
[Warfarin|D] held for an INR of 4.2; resume at [2.5 mg daily|Q] on Friday.
She was switched from [lisinopril|D] to [losartan|D] [50 mg daily|Q] because of a persistent [dry cough|C].
No [fever|C], [chills|C], or [night sweats|C].
[Albuterol|D] [2 puffs q4h PRN|Q] for [wheezing|C].
Continue [insulin glargine|D] [22 units at bedtime|Q] and [insulin lispro|D] [6 units with meals|Q] plus sliding scale.
Discharged on [apixaban|D] [5 mg bid|Q] for newly diagnosed [atrial fibrillation|C].
[CHF exacerbation|C] likely precipitated by dietary indiscretion and missed doses of [furosemide|D].
Blood cultures positive for gram-positive cocci; started [vancomycin|D] [1.25 g IV q12h|Q] for presumed [MRSA bacteremia|C].
[Hypokalemia|C] repleted with [potassium chloride|D] [40 mEq PO|Q] x 2.
Denies [melena|C] or [hematochezia|C] while on [clopidogrel|D].
Her [migraines|C] respond well to [sumatriptan|D] [50 mg at onset|Q].
[Tylenol|D] [650 mg PO q6h PRN|Q] for [pain|C] or [fever|C].
Patient is a 54-year-old woman with [rheumatoid arthritis|C] on [methotrexate|D] [15 mg weekly|Q] and [folic acid|D] [1 mg daily|Q].
[Prednisone|D] [40 mg daily|Q] for 5 days for [COPD exacerbation|C], then stop.
[Ceftriaxone|D] [1 g IV daily|Q] and [azithromycin|D] [500 mg daily|Q] for [community-acquired pneumonia|C].
Transitioned to [cefpodoxime|D] [200 mg PO bid|Q] to complete a 7-day course.
[Nitrofurantoin|D] [100 mg bid|Q] x 5 days for uncomplicated [cystitis|C].
Reports [dizziness|C] when standing since [tamsulosin|D] was started.
BP elevated at 168/94; [amlodipine|D] increased to [10 mg daily|Q].
Patient declined statin therapy despite known [coronary artery disease|C].
[Ondansetron|D] [4 mg IV q6h PRN|Q] for [nausea|C]; [vomiting|C] resolved overnight.
[Levothyroxine|D] [88 mcg daily|Q] for [hypothyroidism|C], taken on an empty stomach.
Recent TSH 6.8 on [levothyroxine|D] [75 mcg|Q]; will increase to [88 mcg daily|Q].
S/p CABG in 2015, now with stable [angina|C].
[Gabapentin|D] [300 mg qHS|Q], titrate to [300 mg tid|Q] as tolerated for [diabetic neuropathy|C].
Patient has [chronic kidney disease stage 3b|C], so [metformin|D] was reduced to [500 mg daily|Q].
[Enoxaparin|D] [40 mg SC daily|Q] for [DVT|C] prophylaxis.
[Heparin|D] [5000 units subcutaneously q8h|Q] while inpatient.
Oxygen saturation 91% on room air with [tachypnea|C].
[Morphine|D] [2 mg IV q3h PRN|Q] for breakthrough [pain|C].
[Seroquel|D] [25 mg qHS PRN|Q] for [agitation|C].
Patient admits to taking extra [oxycodone|D] for [back pain|C].
Completed a course of [valacyclovir|D] [1 g tid|Q] for [shingles|C] last month.
Urine culture pending; empirically started [ciprofloxacin|D] [500 mg bid|Q] for [pyelonephritis|C].
No [chest pain|C], [palpitations|C], or [syncope|C] since starting [metoprolol succinate|D].
[Atorvastatin|D] [80 mg nightly|Q] after [NSTEMI|C].
[Colchicine|D] [0.6 mg bid|Q] for acute [gout flare|C] in the left first MTP joint.
[Allopurinol|D] will be started once the flare resolves.
History of [GI bleed|C] on [aspirin|D], so it was discontinued.
Patient with [cirrhosis|C] and [ascites|C] on [spironolactone|D] [100 mg|Q] and [furosemide|D] [40 mg daily|Q].
[Lactulose|D] [20 g tid|Q], titrated to two or three bowel movements a day, for [hepatic encephalopathy|C].
[Rifaximin|D] [550 mg bid|Q] added for recurrent [hepatic encephalopathy|C].
[Sertraline|D] [50 mg daily|Q] for [depression|C]; mood improved at follow-up.
Reports [insomnia|C] and [anxiety|C]; prefers to avoid benzodiazepines.
[Hydroxyzine|D] [25 mg tid PRN|Q] for [anxiety|C].
[Melatonin|D] [3 mg at bedtime|Q] for [insomnia|C].
[Montelukast|D] [10 mg nightly|Q] and [fluticasone|D] [2 sprays each nostril daily|Q] for [allergic rhinitis|C].
[Insulin glargine|D] reduced to [18 units|Q] after two episodes of [hypoglycemia|C].
A1c 9.1%, up from 7.8%; adding [empagliflozin|D] [10 mg daily|Q].
[Jardiance|D] held before surgery to reduce the risk of [euglycemic DKA|C].
[Ozempic|D] [0.25 mg SC weekly|Q] for [type 2 diabetes|C] and [obesity|C].
Complains of [constipation|C] since starting [oxycodone|D]; added [senna|D] [8.6 mg bid|Q].
[Miralax|D] [17 g daily PRN|Q] for [constipation|C].
[Keppra|D] [500 mg bid|Q] for [seizure disorder|C]; no [seizures|C] in over a year.
Admitted with [status epilepticus|C] and loaded with [levetiracetam|D] [60 mg/kg IV|Q].
[Lorazepam|D] [2 mg IV|Q] x 1 for [seizure|C] activity.
[Thiamine|D] [100 mg daily|Q] and [folate|D] [1 mg daily|Q] for [alcohol use disorder|C].
[Doxycycline|D] [100 mg bid|Q] for 21 days for early [Lyme disease|C].
[Bactrim DS|D] [1 tab bid|Q] for [cellulitis|C] with a small [abscess|C].
[Keflex|D] [500 mg qid|Q] x 7 days for non-purulent [cellulitis|C].
[Fluconazole|D] [150 mg PO once|Q] for [vaginal candidiasis|C].
[Vancomycin|D] [125 mg PO qid|Q] for 10 days for [C. difficile infection|C].
[Oseltamivir|D] [75 mg bid|Q] for 5 days after a positive test for [influenza|C].
[Paxlovid|D] prescribed for [COVID-19|C]; [atorvastatin|D] held during treatment.
[Eliquis|D] [2.5 mg bid|Q] given age over 80 and creatinine above 1.5.
INR subtherapeutic at 1.6; [Coumadin|D] increased to [6 mg daily|Q].
[Digoxin|D] level elevated; patient reports [nausea|C] and [blurred vision|C].
[Diltiazem|D] drip started for [AFib with RVR|C].
Converted to [diltiazem|D] [60 mg PO q6h|Q] once heart rate was controlled.
[Amiodarone|D] [200 mg daily|Q]; check thyroid and liver function every 6 months.
[Carvedilol|D] [6.25 mg bid|Q], [sacubitril-valsartan|D] [24-26 mg bid|Q], and [spironolactone|D] [25 mg daily|Q] for [HFrEF|C].
[Entresto|D] held for [hypotension|C] with systolic pressures in the 80s.
Patient ran out of [Synthroid|D] two weeks ago and now reports [fatigue|C] and [cold intolerance|C].
[Omeprazole|D] [20 mg daily before breakfast|Q] for [GERD|C].
[Famotidine|D] [20 mg bid|Q] added for nocturnal [reflux|C] symptoms.
EGD showed [erosive esophagitis|C]; [pantoprazole|D] increased to [40 mg bid|Q].
[Sucralfate|D] [1 g qid|Q] for [gastric ulcer|C].
[Tamsulosin|D] [0.4 mg daily|Q] to help pass a 4 mm [kidney stone|C].
[Finasteride|D] [5 mg daily|Q] for [BPH|C] with [nocturia|C].
[Oxybutynin|D] stopped due to [confusion|C] in this elderly patient.
[Donepezil|D] [10 mg at bedtime|Q] for [Alzheimer's disease|C].
[Carbidopa-levodopa|D] [25-100 mg tid|Q] for [Parkinson's disease|C]; [tremor|C] improved.
[Sumatriptan|D] was avoided given her history of [coronary vasospasm|C].
[Topiramate|D] [25 mg nightly|Q] for [migraine|C] prophylaxis; warned it may cause [paresthesias|C].
[Hydrochlorothiazide|D] discontinued after [hyponatremia|C] to 126.
Sodium 126 on [HCTZ|D], likely thiazide-induced [hyponatremia|C].
[Prednisone|D] [60 mg daily|Q] started for suspected [giant cell arteritis|C] pending temporal artery biopsy.
[Methylprednisolone|D] [125 mg IV|Q] given for [anaphylaxis|C] along with [epinephrine|D] [0.3 mg IM|Q].
[EpiPen|D] prescribed for [peanut allergy|C].
[Diphenhydramine|D] [25 mg PO q6h PRN|Q] for [itching|C].
[Cetirizine|D] [10 mg daily|Q] for [urticaria|C].
[Triamcinolone|D] [0.1% cream twice daily|Q] to affected areas for [eczema|C].
[Mupirocin|D] ointment applied to the wound [three times daily|Q].
[Nicotine patch|D] [21 mg daily|Q] for [tobacco use disorder|C].
[Bupropion|D] [150 mg bid|Q] for [depression|C] and smoking cessation.
[Naloxone|D] [4 mg intranasal|Q] kit provided at discharge.
[Buprenorphine-naloxone|D] [8-2 mg SL daily|Q] for [opioid use disorder|C].
[Methadone|D] dose confirmed with the clinic as [90 mg daily|Q].
[Vitamin D3|D] [2000 units daily|Q] for [vitamin D deficiency|C].
[Ferrous sulfate|D] [325 mg every other day|Q] for [iron deficiency anemia|C].
[Cyanocobalamin|D] [1000 mcg IM monthly|Q] for [pernicious anemia|C].
[Alendronate|D] [70 mg weekly|Q] for [osteoporosis|C]; take upright with a full glass of water.
[Calcium carbonate|D] [500 mg bid with meals|Q].
[Tramadol|D] avoided because of her [seizure disorder|C].
[Ibuprofen|D] [600 mg q6h PRN|Q] for [knee pain|C]; counseled to take with food.
Stop [naproxen|D] given [acute kidney injury|C].
[Meloxicam|D] [7.5 mg daily|Q] for [osteoarthritis|C] of the hands.
[Hydrocodone-acetaminophen|D] [5-325 mg 1 tab q6h PRN|Q] for postoperative [pain|C].
[Zofran|D] [8 mg ODT q8h PRN|Q] for [nausea|C].
[Metoclopramide|D] [10 mg IV|Q] given for [vomiting|C] related to [gastroparesis|C].
[Insulin|D] drip started for [DKA|C] with an anion gap of 24.
[D50|D] [1 amp IV|Q] given for [hypoglycemia|C] to 42.
[Kayexalate|D] [30 g PO once|Q] for [hyperkalemia|C].
[Sodium bicarbonate|D] [650 mg tid|Q] for [metabolic acidosis|C] from [CKD|C].
[Epoetin alfa|D] [10,000 units SC weekly|Q] for [anemia of chronic kidney disease|C].
[Tacrolimus|D] [2 mg bid|Q] for prevention of [kidney transplant rejection|C].
[Mycophenolate|D] [1000 mg bid|Q] continued; no signs of [rejection|C].
[Valganciclovir|D] [450 mg daily|Q] for [CMV|C] prophylaxis.
[Hydroxychloroquine|D] [200 mg bid|Q] for [lupus|C]; annual eye exam scheduled.
[Adalimumab|D] [40 mg SC every 2 weeks|Q] for [Crohn's disease|C].
[Mesalamine|D] [2.4 g daily|Q] for [ulcerative colitis|C].
[Tiotropium|D] [18 mcg inhaled daily|Q] and [albuterol|D] [PRN|Q] for [COPD|C].
[Symbicort|D] [2 puffs bid|Q] for moderate persistent [asthma|C].
[DuoNeb|D] [q6h while awake|Q] for [COPD exacerbation|C].
[Azithromycin|D] [250 mg three times weekly|Q] to reduce [COPD exacerbations|C].
Uses CPAP nightly for [obstructive sleep apnea|C].
[Modafinil|D] [100 mg every morning|Q] for residual [daytime sleepiness|C].
[Propranolol|D] [10 mg bid|Q] for [essential tremor|C].
[Propranolol|D] [20 mg bid|Q] for prevention of [variceal bleeding|C].
[Octreotide|D] drip and [ceftriaxone|D] started for [upper GI bleed|C] in the setting of [cirrhosis|C].
Transfused 2 units of packed red blood cells for symptomatic [anemia|C].
Encouraged oral hydration for mild [dehydration|C].
Pt is a 72 yo F w/ [COPD|C] on 2 L home O2, [CHF|C], and [CKD|C] admitted with [hypoxia|C].
BIBA after a witnessed [syncopal episode|C] at church; no [head trauma|C].
Chief complaint: [abdominal pain|C] and [bloating|C] for three days.
Onset of [left-sided weakness|C] and [slurred speech|C] at 7 am; last known well at 6 am.
Received [alteplase|D] in the ED for [ischemic stroke|C] within the treatment window.
[Cough|C] productive of green sputum with [fevers|C] to 101.8.
Reports [polyuria|C] and [polydipsia|C] for the past month.
Found down at home, [hypothermic|C] and [confused|C].
[Lisinopril|D] caused [angioedema|C] in 2019 and is listed as an allergy.
Switched [Norco|D] to scheduled [Tylenol|D] [1 g q8h|Q] for [arthritis|C] pain.
Wean oxygen to keep saturation above 92%.
Plan: [furosemide|D] [80 mg IV|Q] now, recheck BMP in the morning, daily weights.
Stable [angina|C] on [isosorbide mononitrate|D] [30 mg daily|Q] and [nitroglycerin|D] [as needed|Q].
[Metoprolol|D] [5 mg IV|Q] x 1 for rate control of [AFib|C].
""".strip().splitlines()

NO_ENTITIES = """
Patient tolerated the procedure well.
Follow up with primary care in one week.
Vital signs stable overnight.
Ambulating independently in the hallway.
Tolerating a regular diet without difficulty.
Discussed the plan with the patient and her daughter at bedside.
Will obtain a repeat basic metabolic panel in the morning.
Physical therapy recommends discharge home with services.
Abdomen soft and nontender.
Alert and oriented to person, place, and time.
Patient was seen and examined at bedside this morning.
Code status: full code.
Diet: cardiac, 2 g sodium.
Return precautions reviewed, and the patient verbalized understanding.
Labs reviewed and within normal limits.
Chest X-ray obtained this morning.
Plan discussed with the attending physician.
NKDA.
No known drug allergies.
Lives alone and is independent with activities of daily living.
Quit smoking 10 years ago.
Drinks one glass of wine on weekends.
Patient is agreeable to the plan.
Home health referral placed.
Medication reconciliation completed with pharmacy.
Next appointment in three months.
Blood pressure 128/76, heart rate 72, afebrile.
Will continue to monitor closely.
Social work consulted for discharge planning.
Patient lives with his wife, who helps with medications.
Daughter is the health care proxy.
Reviewed outside records from the previous admission.
Foley catheter removed on hospital day 2.
Incision clean, dry, and intact.
Telemetry without events overnight.
Weight 82.4 kg, down 1.2 kg from yesterday.
Works as a school teacher and walks daily.
Echo scheduled as an outpatient.
Patient asked good questions, and all were answered.
Case discussed with the night team.
Interpreter used for the entire visit.
Gait steady with a walker.
Urine output adequate.
Repeat labs in one week.
""".strip().splitlines()


# --------------------------------------------------------------------------- composition


def dose_phrase(drug: Drug, rng: random.Random, amounts: tuple[str, ...] = ()) -> str:
    """Amount, route (when the drug has one) and frequency; sometimes only the amount."""
    amount = rng.choice(amounts or drug.amounts)
    route = rng.choice(drug.routes)
    if drug.kind != "prn" and rng.random() < 0.15:
        return f"{amount} {route}".strip()
    return " ".join(part for part in (amount, route, rng.choice(drug.freqs)) if part)


def drug_name(drug: Drug, rng: random.Random) -> str:
    return drug.brand if drug.brand and rng.random() < 0.2 else drug.name


def mark(text: str, code: str) -> str:
    return f"[{text}|{code}]"


def fill(template: str, group: str, rng: random.Random) -> str | None:
    """The template with its slots filled; None when this draw does not fit (then draw again)."""
    pool = BY_KIND.get(group, [])
    if "{side}" in template:
        pool = [d for d in pool if d.sides]
    if "{dose_up}" in template or "{dose_down}" in template:
        pool = [d for d in pool if len(d.amounts) > 1]
    drugs = rng.sample(pool, k=min(4, len(pool))) if pool else []
    values: dict[str, str] = {}
    for i, drug in enumerate(drugs):
        suffix = "" if i == 0 else str(i + 1)
        values[f"drug{suffix}"] = mark(drug_name(drug, rng), "D")
        values[f"dose{suffix}"] = mark(dose_phrase(drug, rng), "Q")
        # Amounts are listed from low to high: "increased to" names a higher one, "decreased to" a lower.
        values[f"dose_up{suffix}"] = mark(dose_phrase(drug, rng, drug.amounts[1:]), "Q")
        values[f"dose_down{suffix}"] = mark(dose_phrase(drug, rng, drug.amounts[:-1]), "Q")
        values[f"amount{suffix}"] = mark(rng.choice(drug.amounts), "Q")
        values[f"ind{suffix}"] = mark(rng.choice(drug.inds), "C")
        if drug.sides:
            values[f"side{suffix}"] = mark(rng.choice(drug.sides), "C")
    course = drugs[0].days if drugs else (3, 5, 7, 10, 14)
    person = rng.choice(PEOPLE)
    female = person in ("woman", "female")
    history = [c for c in HISTORY if c not in (MALE_ONLY if female else FEMALE_ONLY)]
    conds, syms = rng.sample(history, 3), rng.sample(SYMPTOMS, 3)
    for i in range(3):
        suffix = "" if i == 0 else str(i + 1)
        values[f"cond{suffix}"] = mark(conds[i], "C")
        values[f"sym{suffix}"] = mark(syms[i], "C")
    days = rng.choice(course)
    family = rng.choice(FAMILY)
    relatives = [r for r in RELATIVES if r in FEMALE] if family in FEMALE_RELATIVES else RELATIVES
    values.update(
        acute=mark(rng.choice(ACUTE), "C"), family=mark(family, "C"),
        allergen=mark(rng.choice(ALLERGENS), "D"), reaction=mark(rng.choice(REACTIONS), "C"),
        age=str(rng.randint(50, 91)), person=person, days=str(days), day=str(rng.randint(2, max(days - 1, 2))),
        weeks=str(rng.choice([2, 3, 4, 6])), relative=rng.choice(relatives), follow=rng.choice(FOLLOW),
        weekday=rng.choice(WEEKDAYS),
    )
    text = template.format(**values)
    # One sentence naming the same drug stem or the same condition twice reads oddly.
    named = [m[1].lower() for m in MARK.finditer(text) if m[2] in "DC"]
    stems = [name.split()[0] for name in named]
    if len(set(stems)) != len(stems):
        return None
    if any(len(group & {d.name for d in drugs[:template.count("{drug")]}) > 1 for group in CLASSES):
        return None
    return capitalize(text)


def capitalize(text: str) -> str:
    """Uppercase the first letter of the sentence (inside a leading [..] mark too)."""
    for i, char in enumerate(text):
        if char.isalpha():
            return text[:i] + char.upper() + text[i + 1:] if char.islower() else text
        if char.isdigit():
            return text
    return text


def templated(rng: random.Random) -> list[str]:
    out: list[str] = []
    for group, count in DRAWS.items():
        uses: Counter[str] = Counter()
        templates = TEMPLATES[group]
        tries = 0
        made = 0
        while made < count and tries < count * 50:
            tries += 1
            template = rng.choice(templates)
            if uses[template] >= TEMPLATE_USES:
                continue
            sentence = fill(template, group, rng)
            if sentence is None:
                continue
            uses[template] += 1
            made += 1
            out.append(sentence)
    return out


# --------------------------------------------------------------------------- markup -> annotations


def parse(markup: str) -> dict:
    """{"text", "entities": [{"start", "end", "label"}]} of one marked-up sentence."""
    text, entities, position = [], [], 0
    last = 0
    for match in MARK.finditer(markup):
        text.append(markup[last:match.start()])
        position += match.start() - last
        entities.append({"start": position, "end": position + len(match[1]), "label": LABELS[match[2]]})
        text.append(match[1])
        position += len(match[1])
        last = match.end()
    text.append(markup[last:])
    sentence = "".join(text)
    if "[" in sentence or "|" in sentence or "]" in sentence:
        raise ValueError(f"unbalanced markup: {markup}")
    return {"text": sentence, "entities": entities}


def bio(sentence: dict) -> list[tuple[str, str]]:
    """(word, BIO tag) for every word; every entity must cover whole words."""
    words = split_words(sentence["text"])
    tags = ["O"] * len(words)
    for entity in sentence["entities"]:
        inside = [i for i, (_, s, e) in enumerate(words) if s >= entity["start"] and e <= entity["end"]]
        if not inside or words[inside[0]][1] != entity["start"] or words[inside[-1]][2] != entity["end"]:
            raise ValueError(f"entity does not cover whole words: {sentence}")
        for i in inside:
            tags[i] = ("B-" if i == inside[0] else "I-") + entity["label"]
    return [(w, t) for (w, _, _), t in zip(words, tags, strict=True)]


def write_conll(path: Path, sentences: list[dict]) -> None:
    lines = []
    for sentence in sentences:
        lines += [f"{word} {tag}" for word, tag in bio(sentence)] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_jsonl(path: Path, sentences: list[dict], prefix: str) -> None:
    rows = [{"id": f"{prefix}-{i:03d}", **s} for i, s in enumerate(sentences, 1)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def build() -> dict[str, list[dict]]:
    rng = random.Random(SEED)
    marked = HANDWRITTEN + NO_ENTITIES + templated(rng)
    seen: set[str] = set()
    sentences = []
    for line in marked:
        sentence = parse(line)
        if sentence["text"] in seen:
            continue
        seen.add(sentence["text"])
        bio(sentence)  # validates whole-word spans
        sentences.append(sentence)
    rng.shuffle(sentences)
    n = len(sentences)
    cut1, cut2 = round(n * 0.8), round(n * 0.9)
    splits = {"train": sentences[:cut1], "validation": sentences[cut1:cut2], "test": sentences[cut2:]}
    for name, split in splits.items():
        labels = {e["label"] for s in split for e in s["entities"]}
        if labels != set(LABELS.values()):
            raise ValueError(f"{name} lacks {set(LABELS.values()) - labels}")
    return splits


def main() -> None:
    splits = build()
    write_conll(HERE / "train.conll", splits["train"])
    write_conll(HERE / "validation.conll", splits["validation"])
    write_jsonl(HERE / "test.jsonl", splits["test"], "test")
    for name, split in splits.items():
        counts = Counter(e["label"] for s in split for e in s["entities"])
        empty = sum(not s["entities"] for s in split)
        print(f"{name}: {len(split)} sentences, {empty} without entities, {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    main()
