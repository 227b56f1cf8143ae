"""The sources that ``prepare.py --sources extended`` (and ``extended_noise``) add (issue 26).

One place per source: the Debian package and the tar members kept, how a file name tells the
speaker, which files are left out, and which speakers and noise files are held out. Licences and
credit are in the recipe README and /NOTICE. Nothing here reads audio; ``prepare.py`` applies the
same QC to these speakers as to the base ones.

Never add the sources reserved for independent evaluation: Asterisk prompts in languages other
than English, Spanish and French, Asterisk music-on-hold, KLettres, OpenClonk, Sonic Pi, Tux
Paint's sound effects, KTuberling; nor Wesnoth, Freeciv and Pingus (the outside test set).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

MEGAGLEST_DIR = "./usr/share/games/megaglest"
EXTENDED_PACKAGES = {
    # name: tar members to extract (GNU tar wildcards; '*' also matches '/'); the music and
    # tileset members feed only --sources extended_noise, and no speech file name matches them
    "hedgewars-data": [
        "./usr/share/games/hedgewars/Data/Sounds/voices/*",
        "./usr/share/games/hedgewars/Data/Music/*",
        "./usr/share/doc/*",
    ],
    "fillets-ng-data-nl": ["./usr/share/games/fillets-ng/sound/*", "./usr/share/doc/*"],
    "megaglest-data": [
        "*_ack*.wav",
        "*_select*.wav",
        f"{MEGAGLEST_DIR}/data/core/menu/music/*",
        f"{MEGAGLEST_DIR}/techs/megapack/factions/*/music/*",
        f"{MEGAGLEST_DIR}/tilesets/*/sounds/*",
        "./usr/share/doc/*",
    ],
    "kajongg": ["./usr/share/kajongg/voices/*", "./usr/share/doc/*"],
    "lincity-ng-data": ["./usr/share/games/lincity-ng/sounds/*", "./usr/share/doc/*"],
    "scratch": ["./usr/share/scratch/Media/Sounds/*", "./usr/share/doc/*"],
}

# --- hedgewars-data: one voice pack per folder, each read by one actor -------------------------
HEDGEWARS_PACKS = (
    "British",
    "Classic",
    "Default",
    "Default_es",
    "Default_pl",
    "Default_ru",
    "Default_uk",
    "HillBilly",
    "Mobster",
    "Pirate",
    "Russian",
    "Russian_pl",
    "Singer",
    "Surfer",
)
# Robot is the same kind of lines passed through a vocoder: not natural speech
HEDGEWARS_EXCLUDED_PACKS = ("Robot",)
# grunts, coughs, moans, laughs, jump and punch shouts: vocal sounds, not speech
HEDGEWARS_NON_SPEECH = re.compile(r"^(Firepunch|Jump|Ooff|Ow|Poison[A-Za-z]*|Laugh|Hmm)\d*$")


def hedgewars_speaker(rel: str) -> str | None:
    """``hedgewars-data/.../voices/<Pack>/<Line>.ogg`` -> ``hedgewars_<pack>`` (None: left out)."""
    m = re.search(r"/voices/([^/]+)/([^/]+)\.ogg$", rel)
    if not m or m.group(1) not in HEDGEWARS_PACKS or HEDGEWARS_NON_SPEECH.match(m.group(2)):
        return None
    return f"hedgewars_{m.group(1).lower()}"


# --- 0ad-data audio/voice: <civ>/civ/civ_<male|female>_<line>.ogg -------------------------------
ZEROAD_VOICE_CIVS = ("greek", "latin", "persian", "napatan")


def zeroad_voice_speaker(rel: str) -> str | None:
    """``0ad-data/audio/voice/<civ>/civ/civ_<sex>_*.ogg`` -> ``0ad_<civ>_<sex>``; the
    ``global`` folder (a dog) and anything else is left out."""
    m = re.search(r"/audio/voice/([a-z]+)/civ/civ_(male|female)_[^/]*\.ogg$", rel)
    if not m or m.group(1) not in ZEROAD_VOICE_CIVS:
        return None
    return f"0ad_{m.group(1)}_{m.group(2)}"


# --- fillets-ng: <level>-<character>-<line>.ogg, the rule of the Czech data ---------------------
def fillets_speaker(stem: str, lang: str) -> str:
    """Small fish ``m``, big fish ``v``; every other character (and a name without a character
    field) is ``other``."""
    parts = stem.split("-")
    ch = parts[1] if len(parts) >= 3 else "other"
    return f"fillets_{lang}_" + {"m": "m", "v": "v"}.get(ch, "other")


# --- megaglest-data: <unit>_ack<N>.wav / <unit>_select<N>.wav -----------------------------------
# animals, monsters and machines: roars and grunts, not speech ("dr" is the dragon rider's dragon)
MEGAGLEST_CREATURES = (
    "behemoth",
    "bull",
    "carpet",
    "chicken",
    "cow",
    "daemon",
    "dr",
    "dragon",
    "eagle",
    "evil_dragon",
    "genie",
    "ghost_armor",
    "golem",
    "mummy",
    "pig",
)
MEGAGLEST_UNITS = (
    "archer",
    "archmage",
    "axe_thrower",
    "battlemage",
    "cudgel",
    "guard",
    "horseman",
    "initiate",
    "princess",
    "shaman",
    "spearman",
    "stickfighter",
    "summoner",
    "swordman",
    "technician",
    "valkyrie",
    "warrior",
    "worker",
)


def megaglest_speaker(rel: str) -> str | None:
    """``.../<unit>_ack3.wav`` or ``.../<unit>_select1.wav`` -> ``megaglest_<unit>``; creatures
    and every other sound (attack, die, hit, work) are left out."""
    m = re.match(r"([a-z_]+?)_(ack|select)\d*\.wav$", Path(rel).name)
    if not m or m.group(1) not in MEGAGLEST_UNITS:
        return None
    return f"megaglest_{m.group(1)}"


# --- kajongg: voices/<voice>/ (English) and voices/de/<voice>/ (German), same voice ------------
KAJONGG_VOICES = ("male2",)  # the others fail QC (too quiet or noisy)


def kajongg_speaker(rel: str) -> str | None:
    m = re.search(r"/voices/(?:de/)?([a-z0-9]+)/[^/]+\.ogg$", rel)
    if not m or m.group(1) not in KAJONGG_VOICES:
        return None
    return f"kajongg_{m.group(1)}"


# --- the split -----------------------------------------------------------------------------------
# Held out: the whole Dutch fillets-ng cast (its characters may share actors, so all of it stays on
# one side) and the 0ad napatan voices (the cleanest new recordings). The hedgewars packs and the
# megaglest units may share actors among themselves, so all of them train.
EXTENDED_VAL_SPEAKERS = [
    "fillets_nl_m",
    "fillets_nl_v",
    "fillets_nl_other",
    "0ad_napatan_male",
    "0ad_napatan_female",
]
EXTENDED_TRAIN_SPEAKERS = (
    [f"hedgewars_{p.lower()}" for p in HEDGEWARS_PACKS]
    + [f"0ad_{c}_{s}" for c in ("greek", "latin", "persian") for s in ("male", "female")]
    + [f"megaglest_{u}" for u in MEGAGLEST_UNITS]
    + [f"kajongg_{v}" for v in KAJONGG_VOICES]
)
# held-out speakers with fewer QC-passed utterances cannot fill their share of the extra test set
EXTENDED_MIN_VAL_UTTERANCES = 15
EXTENDED_SPEAKER_SOURCE = {s: "fillets_nl" for s in EXTENDED_VAL_SPEAKERS[:3]}
EXTENDED_SPEAKER_CREDIT = {
    **{
        f"hedgewars_{p.lower()}": f"hedgewars voice pack {p} (hedgewars-data, Andrey Korotaev et al.)"
        for p in HEDGEWARS_PACKS
    },
    **{
        f"0ad_{c}_{s}": f"0 A.D. {c} {s} civilian voice (0ad-data, Wildfire Games)"
        for c in ZEROAD_VOICE_CIVS
        for s in ("male", "female")
    },
    **{
        f"megaglest_{u}": f"MegaGlest {u} unit voice (megaglest-data, Glest/MegaGlest teams)"
        for u in MEGAGLEST_UNITS
    },
    "kajongg_male2": "Kajongg voice male2, English and German (kajongg, Wolfgang Rohdewald)",
    "fillets_nl_m": "Dutch voice actor, small fish (fillets-ng-data-nl)",
    "fillets_nl_v": "Dutch voice actor, big fish (fillets-ng-data-nl)",
    "fillets_nl_other": "Dutch voice actors, other characters (fillets-ng-data-nl)",
}


def _content_key(p: Path) -> str:
    return hashlib.sha1(p.read_bytes()).hexdigest()


def extended_speech_files(ext: Path) -> dict:
    """speaker -> sorted list of source paths (relative to the extract dir) of the new sources.
    MegaGlest ships the same recording under several units' folders: each recording counts once."""
    out: dict[str, list[str]] = {}

    def add(spk, p):
        if spk is not None:
            out.setdefault(spk, []).append(p.relative_to(ext).as_posix())

    for p in sorted((ext / "hedgewars-data").rglob("*.ogg")):
        add(hedgewars_speaker(p.as_posix()), p)
    for p in sorted((ext / "0ad-data" / "audio" / "voice").rglob("*.ogg")):
        add(zeroad_voice_speaker(p.as_posix()), p)
    for p in sorted((ext / "fillets-ng-data-nl").rglob("*.ogg")):
        add(fillets_speaker(p.stem, "nl"), p)
    seen: set[str] = set()
    for p in sorted((ext / "megaglest-data").rglob("*.wav")):
        spk = megaglest_speaker(p.as_posix())
        if spk is not None and (key := _content_key(p)) not in seen:
            seen.add(key)
            add(spk, p)
    for p in sorted((ext / "kajongg").rglob("*.ogg")):
        add(kajongg_speaker(p.as_posix()), p)
    return {k: sorted(v) for k, v in out.items()}


# --- noise ---------------------------------------------------------------------------------------
LINCITY = "lincity-ng-data/usr/share/games/lincity-ng/sounds"
# user-interface sounds, not recordings of a place
LINCITY_UI = ("Click.wav", "WindowClose.wav", "WindowOpen.wav")
# held out for validation: whole kinds of place (school yard, trains, harbour, sports crowd, and
# fire and water, which the base recipe holds out too)
LINCITY_VAL_PREFIXES = ("School", "RailTrain", "Harbor", "SportsCroud", "Fire", "Water")
SCRATCH = "scratch/usr/share/scratch/Media/Sounds"


def lincity_split(name: str) -> str | None:
    """'train', 'val' or None (left out) for a lincity-ng sound file name."""
    if name in LINCITY_UI or not name.endswith(".wav"):
        return None
    return "val" if name.startswith(LINCITY_VAL_PREFIXES) else "train"


# kind ("fx": short sounds strung together) and globs, as prepare.NOISE_TRAIN / NOISE_VAL;
# "@lincity_train" / "@lincity_val" are resolved with lincity_split
EXTENDED_NOISE_TRAIN = {
    "lincity_city": ("fx", ["@lincity_train"]),
    # coughs, laughs, sneezes, screams, a baby crying, party chatter, footsteps (Vocals/ is
    # singing and is not used)
    "scratch_human": ("fx", [f"{SCRATCH}/Human/*"]),
}
EXTENDED_NOISE_VAL = {
    "lincity_city": ("fx", ["@lincity_val"]),
    # everyday effects (car and motorcycle passing, door creak, typing, water) and animals
    "scratch_effects": ("fx", [f"{SCRATCH}/Effects/*", f"{SCRATCH}/Animal/*"]),
}


def lincity_files(ext: Path, split: str) -> list[Path]:
    return [p for p in sorted((ext / LINCITY).glob("*.wav")) if lincity_split(p.name) == split]


# --- more music and ambience: --sources extended_noise -------------------------------------------
# Music and ambience: the noise types where the model trails the peer denoisers on the outside
# test set (recipe README). These folders add the recorded soundtracks of four other games (hedgewars, MegaGlest,
# Widelands, Flare) and the ambience loops of MegaGlest's tilesets and of Flare.
HEDGEWARS_MUSIC = "hedgewars-data/usr/share/games/hedgewars/Data/Music"
# held out (never in training), one per style: calm acoustic, oriental, orchestral; kept for a
# later validation set of music noise
HEDGEWARS_MUSIC_VAL = ("Nature.ogg", "oriental.ogg", "snow.ogg")
MEGAGLEST = "megaglest-data/usr/share/games/megaglest"
# long tileset loops (birds, insects, night, rain, wind, a hellish drone); the short calls in the
# same folders (owl, rooster, hawk, wolf, chicken, cow, good_morning) are single events
MEGAGLEST_AMBIENCE = re.compile(
    r"^(day|night|nightime|sunny_day|desertday|rain|wind|hell)\.(ogg|wav)$"
)


def hedgewars_music_split(name: str) -> str | None:
    """'train', 'val' or None (not music) for a file of hedgewars' ``Data/Music``."""
    if not name.endswith(".ogg"):
        return None
    return "val" if name in HEDGEWARS_MUSIC_VAL else "train"


def megaglest_ambience_files(ext: Path) -> list[Path]:
    """The tilesets' long ambience loops, each recording once: tilesets that share a sound hold a
    symbolic link to another tileset's file (skipped) or a copy of it (counted once)."""
    out, seen = [], set()
    for p in sorted((ext / MEGAGLEST / "tilesets").glob("*/sounds/*")):
        if MEGAGLEST_AMBIENCE.match(p.name) and not p.is_symlink():
            if (key := _content_key(p)) not in seen:
                seen.add(key)
                out.append(p)
    return out


def hedgewars_music_files(ext: Path, split: str) -> list[Path]:
    return [
        p
        for p in sorted((ext / HEDGEWARS_MUSIC).glob("*"))
        if hedgewars_music_split(p.name) == split
    ]


WIDELANDS_MUSIC = "widelands-data/usr/share/games/widelands/data/music"
FLARE = "flare-game/usr/share/games/flare/mods"
# packages that only --sources extended_noise reads
MORE_NOISE_PACKAGES = {
    "widelands-data": ["./usr/share/games/widelands/data/music/*", "./usr/share/doc/*"],
    "flare-game": [
        "./usr/share/games/flare/mods/*/music/*",
        "./usr/share/games/flare/mods/*/soundfx/environment/*",
        "./usr/share/doc/*",
    ],
}


# the flare-game environment loops that are places, not events (anvil, fire, stairs, doors and
# falling rocks are left out); loops shorter than a 10 s clip give nothing
FLARE_AMBIENCE = (
    "empyrean_campaign/soundfx/environment/rain.ogg",
    "fantasycore/music/wind_ambient.ogg",
    "fantasycore/soundfx/environment/wind_loop.ogg",
    "fantasycore/soundfx/environment/cave_wind_loop.ogg",
    "fantasycore/soundfx/environment/cave_droplets_loop.ogg",
    "fantasycore/soundfx/environment/forest_owl_loop.ogg",
)

# kind and globs as EXTENDED_NOISE_TRAIN ("long": 10 s excerpts at random non-overlapping places,
# round-robin over the files, so every track gives a similar share); "@..." is resolved by
# extra_noise_files, "!..." leaves out paths that contain it
MORE_NOISE_TRAIN = {
    "hedgewars_music": ("long", ["@hedgewars_music_train"]),
    "megaglest_music": (
        "long",
        [
            f"{MEGAGLEST}/data/core/menu/music/*.ogg",
            f"{MEGAGLEST}/techs/megapack/factions/*/music/*.ogg",
        ],
    ),
    "widelands_music": ("long", [f"{WIDELANDS_MUSIC}/*.ogg"]),
    "flare_music": ("long", [f"{FLARE}/fantasycore/music/*.ogg", "!/wind_ambient.ogg"]),
    "megaglest_ambience": ("long", ["@megaglest_ambience"]),
    "flare_ambience": ("long", [f"{FLARE}/{rel}" for rel in FLARE_AMBIENCE]),
}
# at most this many 10 s clips per folder (about 33 kB each): 40 min from each of the two large
# soundtracks (hedgewars 23 tracks, 86 min; widelands 31 tracks, 95 min), 17 min from each of the
# smaller ones (megaglest 9 tracks, 31 min; flare 11 tracks, 37 min); the ambience folders give
# what their loops hold (the caps are not reached)
MORE_NOISE_MAX_CLIPS = {
    "hedgewars_music": 240,
    "widelands_music": 240,
    "megaglest_music": 100,
    "flare_music": 100,
    "megaglest_ambience": 120,
    "flare_ambience": 60,
}


def extra_noise_files(ext: Path, pattern: str) -> list[Path] | None:
    """Files of an "@name" noise pattern of this module (None: not one of them)."""
    if pattern in ("@lincity_train", "@lincity_val"):
        return lincity_files(ext, pattern.removeprefix("@lincity_"))
    if pattern in ("@hedgewars_music_train", "@hedgewars_music_val"):
        return hedgewars_music_files(ext, pattern.removeprefix("@hedgewars_music_"))
    if pattern == "@megaglest_ambience":
        return megaglest_ambience_files(ext)
    return None
