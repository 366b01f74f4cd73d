"""What a person can ask of the studio: one function per intent, the only way widgets change anything.

Widgets render view models and call these; each takes the services it needs
(store, intake, trash, kit builder, reference shelf, pricing) as arguments and
states its contract. Nothing here imports streamlit, so every use case runs and
is tested without a page.

Money (one click = at most one creative):
- `generate`, `send_again`, `launch_campaign` and `resubmit_campaign` take a
  click token. A token records its submissions *and their spend* in one
  transaction, at most once (`Store.add_click`, `CampaignStore.launch_once`,
  `CampaignStore.add_cells_once`): a rerun that calls a callback twice, a double
  click or two racing replicas record nothing new and get the first recording's
  ids back. A failure anywhere in that transaction leaves nothing written, so
  the same click tried again records it once.
- Every create's idempotency key is derived from the token (`click_keys`), so a
  resend is replayed by HiAPI, never billed twice.

Who made what: the use cases that record work or spend (`generate`,
`launch_campaign`, `send_again`, `resubmit_campaign`, `add_to_collection`) take
an `author`, the signed-in person the page layer names (`LOCAL_AUTHOR`, "local",
without a team login), and record it on every row they write.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Protocol

from . import routes
from .blobs import BlobStore
from .campaign_store import CampaignStore, NewCampaign, default_name
from .campaigns import CampaignPlan, PromptPlan, render
from .events import CHANGED, EventBus
from .export import campaign_manifest_rows, campaign_zip_name, images_zip_name, write_zip
from .intake import Intake
from .kit import KitBuilder, KitJob
from .models import TaskRequest
from .output_storage import set_persistent
from .pricing import Pricing, to_micros
from .pricing import load as load_pricing
from .pricing import reset as reset_pricing
from .pricing import save as save_pricing
from .records import LOCAL_AUTHOR, SpendRate
from .references import MAX_BYTES, MAX_REFERENCES, ReferenceRefused, ReferenceShelf, reference_names
from .repositories import Repositories as Store
from .trash import Deletion, Trash
from .validation import first_problem_by_field, validate_request

#: Real HiAPI downloads references from the internet: it needs the studio's public https address.
PUBLIC_URL_NEEDED = (
    "HiAPI downloads reference images from the studio, so it needs the studio's public https address: "
    "set STUDIO_PUBLIC_URL (e.g. https://studio.example.com) and restart, or remove the references."
)

Plan = PromptPlan | CampaignPlan


class SignReferences(Protocol):
    """Signs kept references' names into the URLs HiAPI fetches, or says in one sentence why it cannot."""

    def __call__(self, names: Sequence[str]) -> tuple[str, ...] | str: ...


class Paced(Protocol):
    """What Settings pushes to the workers: the limit of campaign tasks at HiAPI at once."""

    def set_max_active(self, n: int) -> None: ...


# -- references ------------------------------------------------------------------


def sign_references(
    shelf: ReferenceShelf | None, base: str | None, names: Sequence[str], *, simulated: bool
) -> tuple[str, ...] | str:
    """The signed URLs HiAPI fetches these kept references from, or the sentence saying why it cannot.

    `base` is where HiAPI reaches the studio (None: it cannot). Real HiAPI
    needs https; the simulator also takes the studio's loopback address.
    """
    if shelf is None or base is None:
        return PUBLIC_URL_NEEDED
    if not simulated and not base.lower().startswith("https://"):
        return PUBLIC_URL_NEEDED
    missing = [n for n in names if shelf.get(n) is None]
    if missing:
        return f"{len(missing)} reference image{'s are' if len(missing) != 1 else ' is'} no longer kept: remove it and add it again."
    return tuple(shelf.url(base, n) for n in names)


def keep_references(
    shelf: ReferenceShelf, names: Sequence[str], files: Sequence[tuple[str, bytes]]
) -> tuple[list[str], list[str]]:
    """Keep each (file name, bytes) on the shelf after `names`; returns (names now, refusals).

    A refused file is named with its reason and the rest are kept; at most
    `MAX_REFERENCES`; the same bytes are one reference however often added.
    """
    kept = list(names)
    problems: list[str] = []
    for filename, data in files:
        if len(kept) >= MAX_REFERENCES:
            problems.append(
                f"“{filename}” was not added: at most {MAX_REFERENCES} references; remove one first."
            )
            continue
        try:
            ref = shelf.add(data, filename)
        except ReferenceRefused as exc:
            problems.append(exc.message)
            continue
        if ref.name not in kept:
            kept.append(ref.name)
    return kept, problems


def output_as_reference(
    store: Store, open_original: Callable[[str], AbstractContextManager[IO[bytes]]], output_id: int
) -> tuple[str, bytes] | str:
    """A kept result as a reference file (name, bytes), or the sentence saying why not.

    A PNG above the reference size limit becomes the same picture as a
    high-quality JPEG.
    """
    found = store.gallery_items([output_id])
    if not found or not found[0].sha256:
        return "That image is no longer kept."
    item = found[0]
    sha = found[0].sha256
    try:
        with open_original(sha) as f:
            data = f.read()
    except (OSError, KeyError):  # KeyError: BlobNotFound, deleted meanwhile
        return "That image is no longer kept."
    if len(data) > MAX_BYTES:
        from PIL import Image  # only here: the other use cases need no Pillow

        with Image.open(io.BytesIO(data)) as im:
            buf = io.BytesIO()
            im.convert("RGB").save(buf, "JPEG", quality=92)
            data = buf.getvalue()
    return f"result {item.aspect_ratio} {item.resolution}.png", data


# -- Generate ---------------------------------------------------------------------


@dataclass(frozen=True)
class Quote:
    """What one Generate would send and cost, frozen at the click.

    What a confirmation states is exactly what `generate` sends and prices:
    the plan, the per-image price and the currency are taken from here, not
    looked up again.
    """

    plan: Plan
    images: int
    resolution: str
    quality: str | None
    unit: Decimal
    cost: Decimal
    currency: str
    needs_confirmation: bool


def quote(plan: Plan, pricing: Pricing) -> Quote:
    """Price a plan with Settings' table and say whether it needs a confirmation first."""
    n = plan.images
    res, quality = plan.resolution, plan.quality
    return Quote(
        plan=plan,
        images=n,
        resolution=res,
        quality=quality,
        unit=pricing.unit(res, quality),
        cost=pricing.estimate(n, res, quality),
        currency=pricing.currency,
        needs_confirmation=pricing.needs_confirmation(n, res, quality),
    )


@dataclass(frozen=True)
class Generated:
    """What one Generate recorded: its submissions, and the campaign when it launched one."""

    submission_ids: tuple[int, ...]
    campaign_id: int | None = None
    campaign_name: str | None = None


def generate(
    intake: Intake,
    quote: Quote,
    *,
    model: str,
    click_token: str,
    campaign_name: str = "",
    author: str = LOCAL_AUTHOR,
) -> Generated:
    """Send one click's quoted plan: submissions and spend in ONE transaction, at most once per token.

    A plan with problems (or nothing to send) raises ValueError and writes
    nothing; so does an invalid request (RequestValidationError) or a bad
    token. The same token again returns the first recording and sends nothing.
    A campaign plan launches one campaign named `campaign_name` (a dated
    default when blank).
    """
    plan = quote.plan
    if plan.problems:
        raise ValueError(next(iter(plan.problems.values())))
    unit = to_micros(quote.unit)
    if isinstance(plan, CampaignPlan):
        name = campaign_name.strip() or default_name()
        cid, ids = _launch(intake, plan, name, unit, quote.currency, model, click_token, author)
        return Generated(tuple(ids), cid, name)
    if not plan.requests:
        raise ValueError("Nothing to generate.")
    rate = SpendRate(quote.resolution, unit, quote.currency)
    ids = intake.submit(plan.requests, click_token=click_token, spend=rate, author=author)
    return Generated(tuple(ids))


def _launch(
    intake: Intake,
    plan: CampaignPlan,
    name: str,
    unit_micros: int,
    currency: str,
    model: str,
    click_token: str | None,
    author: str,
) -> tuple[int, list[int]]:
    if plan.problems or not plan.prompts:
        raise ValueError(next(iter(plan.problems.values()), "Nothing to generate."))
    new = NewCampaign(
        name=name or default_name(),
        template=plan.template,
        variables=tuple(plan.names),
        ratios=tuple(plan.ratios),
        resolution=plan.resolution,
        rows=tuple(zip(plan.rows, plan.prompts, strict=True)),
        author=author,
    )
    cells = [(c.row, c.request) for c in plan.cells(model)]
    return intake.launch_campaign(
        new, cells, unit_micros=unit_micros, currency=currency, click_token=click_token
    )


def launch_campaign(
    intake: Intake,
    plan: CampaignPlan,
    *,
    name: str,
    pricing: Pricing,
    model: str,
    click_token: str | None = None,
    author: str = LOCAL_AUTHOR,
) -> tuple[int, list[int]]:
    """Record a planned campaign (rows, cells, spend), as `author`'s, in one transaction and queue its cells.

    Returns (campaign id, submission ids). One click (`click_token`) launches
    at most one campaign: launching it again returns the first campaign and
    sends nothing. A plan with problems raises ValueError (nothing written).
    """
    unit = to_micros(pricing.unit(plan.resolution))
    return _launch(intake, plan, name, unit, pricing.currency, model, click_token, author)


# -- sending again ----------------------------------------------------------------


def send_again(
    store: Store,
    intake: Intake,
    pricing: Pricing,
    submission_id: int,
    *,
    click_token: str,
    sign: SignReferences,
    quality: str | None = None,
    author: str = LOCAL_AUTHOR,
) -> list[int] | str:
    """Send a stored submission's recipe again as a new creative; its new ids, or why nothing was sent.

    The recipe is the one first sent (prompt, ratio, resolution, model,
    quality, background, storage); `quality` overrides it (Make final, which
    drops the background: `ext` takes none). References are signed anew by
    `sign` (the first links expire). Priced like Generate, once per
    `click_token`, in the same transaction as the submission; the new
    creative and its spend are `author`'s (who sends it again, not who first did).
    """
    sub = store.submission(submission_id)
    if sub is None:
        return "This task is gone (deleted); nothing was sent."
    refs: tuple[str, ...] = ()
    if sub.references:
        found = sign(reference_names(sub.references))
        if isinstance(found, str):
            return found
        refs = found
    quality = quality or sub.quality
    request = TaskRequest(
        sub.prompt,
        sub.aspect_ratio,
        sub.resolution,
        sub.model,
        references=refs,
        quality=quality,
        background=None if quality else sub.background,
        storage=sub.storage,
    )
    rate = SpendRate(sub.resolution, to_micros(pricing.unit(sub.resolution, quality)), pricing.currency)
    return intake.submit([request], click_token=click_token, spend=rate, author=author)


def resubmit_campaign(
    intake: Intake,
    campaign_id: int,
    edits: Mapping[int, Mapping[str, str]],
    *,
    pricing: Pricing,
    model: str,
    click_token: str | None = None,
    sign: SignReferences | None = None,
    author: str = LOCAL_AUTHOR,
) -> list[int]:
    """Resubmit the failed and cancelled cells of the given rows, with their (edited) values.

    `edits` maps a row number to its values. Every row is rendered and checked
    first; a problem raises ValueError naming the row, and nothing is sent or
    saved. The rows' new values are saved, then the cells and their spend are
    recorded in one transaction, once per `click_token`, as `author`'s. The campaign's
    references are signed anew by `sign` (ValueError with its sentence when
    they cannot be).
    """
    book = CampaignStore(intake.store)
    camp = book.campaign(campaign_id)
    if camp is None:
        raise ValueError("This campaign no longer exists.")
    rows = {r.idx: r for r in book.rows(campaign_id)}
    redo = [c for c in book.cells(campaign_id) if (c.failed or c.cancelled) and c.row in edits]
    prompts: dict[int, tuple[dict[str, str], str]] = {}
    for idx in sorted({c.row for c in redo}):
        values = {n: str(edits[idx].get(n, "") or "").strip() for n in camp.variables}
        try:
            prompt = render(camp.template, values)
        except KeyError as exc:
            raise ValueError(f"Row {idx}: {{{{{exc.args[0]}}}}} is empty — fill it in.") from None
        why = first_problem_by_field(validate_request(prompt, "auto", "1K")).get("prompt")
        if why:
            raise ValueError(f"Row {idx}: {why}")
        prompts[idx] = (values, prompt)
    refs: tuple[str, ...] = ()
    first = intake.store.submission(min(c.submission_id for c in redo)) if redo else None
    if first is not None and first.references and sign is not None:
        found = sign(reference_names(first.references))
        if isinstance(found, str):
            raise ValueError(found)
        refs = found
    for idx, (values, prompt) in prompts.items():
        if idx in rows:
            book.update_row(campaign_id, idx, values, prompt)
    cells = [
        (c.row, TaskRequest(prompts[c.row][1], c.aspect_ratio, camp.resolution, model, references=refs))
        for c in redo
        if c.row in prompts
    ]
    if not cells:
        return []
    unit = to_micros(pricing.unit(camp.resolution))
    return intake.submit_campaign(
        campaign_id,
        cells,
        unit_micros=unit,
        currency=pricing.currency,
        click_token=click_token,
        author=author,
    )


# -- deleting -----------------------------------------------------------------------


def delete_images(trash: Trash, output_ids: Sequence[int]) -> Deletion:
    """Hide the images at once, undoable for the trash's window; rows and files go when it passes.

    The store hides them first and the disk is touched only by the purge, in
    the core (`studio.trash`), never by a page.
    """
    return trash.delete(list(output_ids))


def undo_delete(trash: Trash, token: str) -> int:
    """Restore one deletion's images as they were; 0 when its window has passed (too late)."""
    return trash.undo(token)


# -- favourites and collections -----------------------------------------------------


def set_favourite(store: Store, events: EventBus | None, output_id: int, on: bool) -> None:
    """Mark or unmark a favourite and tell every open page (they redraw the star)."""
    store.set_favourite(output_id, on)
    if events is not None:
        events.publish(CHANGED)


def add_to_collection(
    store: Store, name: str, output_ids: Sequence[int], *, author: str = LOCAL_AUTHOR
) -> int:
    """Add images to the collection of that name (made when new, by `author`); returns its id.

    A blank name raises ValueError. Adding an image twice keeps it once.
    Collections are shared: anyone may add to one, and it keeps its first author.
    """
    cid = store.add_collection(name, author=author)
    store.add_to_collection(cid, list(output_ids))
    return cid


# -- settings -----------------------------------------------------------------------


def apply_settings(store: Store, intake: Paced, pricing: Pricing | None, *, defaults: Pricing) -> Pricing:
    """Save prices and limits (None: back to `defaults`) and push the campaign limit once.

    Returns the pricing now in force (Settings' saved values over the
    defaults). The limit goes to the intake, which writes it to the create
    budget every worker on this HiAPI key reads.
    """
    if pricing is None:
        reset_pricing(store)
    else:
        save_pricing(store, pricing)
    now = load_pricing(store, defaults)
    intake.set_max_active(now.max_active)
    return now


def set_output_storage(store: Store, persistent: bool) -> None:
    """Send `storage: "persistent"` (billed by HiAPI) with every new create from now on, or stop."""
    set_persistent(store, persistent)


# -- exports and kits ---------------------------------------------------------------


@dataclass(frozen=True)
class Export:
    """A zip ready to download: its blob's token, the name a download gets, and how many images it holds."""

    token: str
    download_name: str
    images: int

    @property
    def route(self) -> str:
        """The studio's route that serves it (behind the login)."""
        return routes.export(self.token, self.download_name)


def export_images(store: Store, blobs: BlobStore, output_ids: Sequence[int]) -> Export:
    """Zip the kept originals of `output_ids` with manifest.csv/json (deleted ones are left out)."""
    items = store.gallery_items(list(output_ids))
    return Export(write_zip(items, blobs), images_zip_name(len(items)), len(items))


def export_campaign(store: Store, blobs: BlobStore, campaign_id: int) -> Export | None:
    """Zip every kept image of a campaign, named by row and ratio, with a manifest mapping each to its row.

    None when the campaign is gone.
    """
    book = CampaignStore(store)
    camp = book.campaign(campaign_id)
    if camp is None:
        return None
    kept = book.kept_items(campaign_id)
    values = {r.idx: r.values for r in book.rows(campaign_id)}
    manifest = campaign_manifest_rows(
        camp.name, camp.variables, [(r, it, values.get(r, {})) for r, it in kept]
    )
    token = write_zip([it for _, it in kept], blobs, manifest=manifest)
    return Export(token, campaign_zip_name(camp.name), len(kept))


def start_kit(kits: KitBuilder, store: Store, creative_id: str, placement_keys: Sequence[str]) -> KitJob:
    """Queue one creative's delivery kit on the builder's thread; ValueError (nothing queued) for a bad pick."""
    items = store.creative_items(creative_id)
    if not items:
        raise ValueError("A kit can be made once an image of this creative is kept.")
    return kits.start(items, list(placement_keys))
