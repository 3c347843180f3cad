// The demo page: Uppy's Dashboard for picking files and per-file progress, @uppy/aws-s3 for the transfer, the
// broker for everything that needs authority. For each file, in order:
//
// 1. a ticket (`POST /v1/uploads`), asked for in a pre-processor so its answer decides how Uppy sends the file:
//    `POST` → one presigned form POST (getUploadParameters); `MULTIPART` → Uppy's multipart path with the
//    broker's endpoints (the ticket is the "create"; sign parts, list parts, complete; abort = cancel), cut
//    into exactly the ticket's `part_size` (each part URL signs its exact length);
// 2. the bytes straight to the store;
// 3. `GET /v1/uploads/<id>` until a final state, then `GET /v1/media/<id>` for the links.
//
// A refused ticket fails that file alone (its code shows on the file and in its row); the others go on.

import AwsS3, { type AwsS3Part, type AwsS3UploadParameters } from '@uppy/aws-s3'
import Uppy, { type Body, type Meta, type UppyFile } from '@uppy/core'
import Dashboard from '@uppy/dashboard'
import '@uppy/core/css/style.min.css'
import '@uppy/dashboard/css/style.min.css'
import './style.css'

import { Broker, BrokerError, FINAL_STATES, type MultipartPlan, type Ticket, tokenClaims } from './broker'
import { ResultRow } from './results'
import { uploadBytes } from './transfer'

type PageFile = UppyFile<Meta, Body>

const MiB = 1024 * 1024
// Over 5 MiB (the smallest part S3 allows) the page asks for parts ("resumable"): a dropped connection costs
// one part, not the file, and pausing in the dashboard resumes from the parts the store already holds. Over,
// not from: Uppy sends a file of exactly one part's size as a single request.
const RESUMABLE_FROM = 5 * MiB
const POLL_MS = 500

// The kinds of DESIGN.md, with a context that satisfies each one's rule (editable on the page).
const KINDS: { name: string; context: string; note: string }[] = [
  { name: 'workout_photo', context: 'workout_id=demo-workout', note: 'JPEG, PNG, WebP, HEIC · 15 MiB · private' },
  { name: 'workout_video', context: 'workout_id=demo-workout', note: 'MP4, QuickTime · 1 GiB · private' },
  { name: 'avatar', context: '', note: 'images · 5 MiB · public' },
  { name: 'food_image', context: '', note: 'images · 10 MiB · public' },
  { name: 'document', context: 'document_id=demo-plan', note: 'PDF · 20 MiB · private' },
  { name: 'exercise_demo', context: 'exercise_id=demo-squat', note: 'images, videos · 500 MiB · staff only' },
]

interface Entry {
  row: ResultRow
  ticket?: Ticket
  refusal?: BrokerError
}

const broker = new Broker()
const entries = new Map<string, Entry>()
// Uppy asks for the chunk size with the file's bytes only, not the file: find the ticket by that Blob.
const ticketsByData = new WeakMap<Blob, Ticket>()

const $ = <T extends HTMLElement>(selector: string): T => document.querySelector<T>(selector)!
const tokenInput = $<HTMLInputElement>('#token')
const who = $<HTMLSpanElement>('#who')
const kindSelect = $<HTMLSelectElement>('#kind')
const contextInput = $<HTMLInputElement>('#context')
const kindNote = $<HTMLSpanElement>('#kind-note')
const results = $<HTMLUListElement>('#results')

const uppy = new Uppy<Meta, Body>({ autoProceed: true })
uppy.use(Dashboard, {
  inline: true,
  target: '#dashboard',
  height: 380,
  width: '100%',
  disabled: true,
  proudlyDisplayPoweredByUppy: false,
  note: 'Sign in first. Photos, videos or PDFs, as the kind above accepts.',
})
uppy.use(AwsS3, {
  shouldUseMultipart: (file) => multipartPlan(file) !== undefined,
  getChunkSize: (data) => {
    const upload = ticketsByData.get(data as Blob)?.upload
    return upload?.method === 'MULTIPART' ? upload.part_size : RESUMABLE_FROM
  },
  getUploadParameters: (file) => {
    const { upload } = ticketFor(file)
    if (upload.method !== 'POST') throw new Error('a multipart ticket has no form to post')
    return { method: 'POST', url: upload.url, fields: upload.fields } satisfies AwsS3UploadParameters
  },
  // The broker created the multipart upload with the ticket; Uppy only needs its id back in later calls.
  createMultipartUpload: (file) => {
    const ticket = ticketFor(file)
    return { uploadId: ticket.upload_id, key: ticket.upload_id }
  },
  signPart: async (file, { partNumber, body, signal }) => {
    const plan = multipartPlan(file)!
    const [part] = (await broker.partUrls(plan, [partNumber], signal)).parts
    const { 'Content-Length': signedLength, ...headers } = part.headers
    if (signedLength !== undefined && Number(signedLength) !== body.size) {
      throw new Error(`part ${partNumber} is ${body.size} bytes but its URL signs ${signedLength}`)
    }
    // Content-Length is the browser's to send (it is the Blob's size, checked above); it refuses to set it.
    return { method: 'PUT', url: part.url, headers } satisfies AwsS3UploadParameters
  },
  listParts: async (file, { signal }) => {
    const stored = await broker.storedParts(multipartPlan(file)!, signal)
    return stored.parts.map(
      (part): AwsS3Part => ({ PartNumber: part.part_number, ETag: part.etag, Size: part.size }),
    )
  },
  completeMultipartUpload: async (file, { parts, signal }) => {
    const sent = parts.map((part) => ({ part_number: part.PartNumber!, etag: part.ETag! }))
    await broker.complete(multipartPlan(file)!, sent, signal)
    return {}
  },
  abortMultipartUpload: async (file) => {
    await broker.cancel(ticketFor(file).upload_id)
  },
  uploadPartBytes: uploadBytes,
})

// Tickets before the transfer: the answer (POST or MULTIPART, part size) decides how Uppy sends each file.
uppy.addPreProcessor(async (fileIDs) => {
  const kind = kindSelect.value
  const context = parseContext(contextInput.value)
  await Promise.all(fileIDs.map((id) => requestTicket(uppy.getFile(id), kind, context)))
})

async function requestTicket(file: PageFile, kind: string, context: Record<string, string>): Promise<void> {
  const known = entries.get(file.id)
  if (known?.ticket) return // a retry of the same file reuses its upload
  const size = file.size ?? 0
  const entry: Entry = known ?? { row: new ResultRow(results, file.name ?? 'file', kind, size) }
  entries.set(file.id, entry)
  entry.row.setState('ticket', 'asking for a ticket')
  try {
    const ticket = await broker.ticket({
      kind,
      content_type: file.type || 'application/octet-stream',
      size,
      filename: file.name ?? 'file',
      ...(size > RESUMABLE_FROM ? { resumable: true } : {}),
      ...(Object.keys(context).length ? { context } : {}),
    })
    entry.ticket = ticket
    entry.refusal = undefined
    ticketsByData.set(file.data as Blob, ticket)
    const { upload } = ticket
    entry.row.ticketed(
      ticket.upload_id,
      upload.method,
      upload.method === 'MULTIPART' ? { count: upload.part_count, size: upload.part_size } : undefined,
    )
  } catch (error) {
    entry.refusal = asBrokerError(error)
    entry.row.refused(entry.refusal.code, entry.refusal.detail)
  }
}

function ticketFor(file: PageFile): Ticket {
  const entry = entries.get(file.id)
  if (entry?.refusal) throw entry.refusal // Uppy reports it on the file: the upload of this file stops here
  if (!entry?.ticket) throw new Error('no ticket for this file')
  return entry.ticket
}

function multipartPlan(file: PageFile): MultipartPlan | undefined {
  const upload = entries.get(file.id)?.ticket?.upload
  return upload?.method === 'MULTIPART' ? upload : undefined
}

uppy.on('upload-progress', (file, progress) => {
  if (file) entries.get(file.id)?.row.progress(progress.bytesUploaded, progress.bytesTotal ?? 0)
})

uppy.on('upload-error', (file, error) => {
  const entry = file && entries.get(file.id)
  if (!entry || entry.refusal) return // a refused ticket is already on its row
  const failure = asBrokerError(error)
  entry.row.refused(failure.code, failure.detail, 'store_failed')
})

uppy.on('upload-success', (file) => {
  const entry = file && entries.get(file.id)
  if (!entry?.ticket) return
  entry.row.uploaded()
  void follow(entry.row, entry.ticket.upload_id)
})

/** The broker's view of the upload until it is final, then its links. */
async function follow(row: ResultRow, uploadId: string): Promise<void> {
  for (;;) {
    let status
    try {
      status = await broker.status(uploadId)
    } catch (error) {
      const failure = asBrokerError(error)
      row.refused(failure.code, failure.detail, 'unknown')
      return
    }
    row.setState(status.status)
    if (FINAL_STATES.has(status.status)) {
      if (status.error) row.refused(status.error.code, status.error.message, status.status)
      if (status.status === 'ready') await showLinks(row, uploadId)
      return
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS))
  }
}

async function showLinks(row: ResultRow, uploadId: string): Promise<void> {
  try {
    row.showMedia(await broker.media(uploadId), () => void showLinks(row, uploadId))
  } catch (error) {
    const failure = asBrokerError(error)
    row.refused(failure.code, failure.detail, 'ready')
  }
}

function asBrokerError(error: unknown): BrokerError {
  if (error instanceof BrokerError) return error
  const message = error instanceof Error ? error.message : String(error)
  return new BrokerError('upload_failed', message, 0)
}

function parseContext(value: string): Record<string, string> {
  const context: Record<string, string> = {}
  for (const pair of value.split(',')) {
    const [key, ...rest] = pair.split('=')
    if (key.trim() && rest.length) context[key.trim()] = rest.join('=').trim()
  }
  return context
}

// --- signing in and picking a kind ----------------------------------------------------------------------------

async function signIn(): Promise<void> {
  broker.token = tokenInput.value.trim()
  who.dataset.state = 'checking'
  who.textContent = 'checking…'
  try {
    await broker.checkToken()
  } catch (error) {
    const failure = asBrokerError(error)
    who.dataset.state = 'refused'
    who.textContent = failure.message
    uppy.getPlugin('Dashboard')?.setOptions({ disabled: true })
    return
  }
  const claims = tokenClaims(broker.token)
  who.dataset.state = 'signed-in'
  who.textContent = `signed in as ${claims.sub ?? '?'}${claims.roles?.length ? ` (${claims.roles.join(', ')})` : ''}`
  uppy.getPlugin('Dashboard')?.setOptions({ disabled: false })
}

for (const kind of KINDS) {
  kindSelect.append(new Option(kind.name, kind.name))
}
function kindChanged(): void {
  const kind = KINDS.find((k) => k.name === kindSelect.value)!
  contextInput.value = kind.context
  kindNote.textContent = kind.note
}
kindSelect.addEventListener('change', kindChanged)
kindChanged()

$<HTMLFormElement>('#signin').addEventListener('submit', (event) => {
  event.preventDefault()
  void signIn()
})

// `broker dev` prints /demo/#token=…: a fragment never leaves the browser. Take it, then drop it from the
// address bar so it is not left in the history or on screen.
const fromLink = new URLSearchParams(location.hash.slice(1)).get('token')
if (fromLink) {
  tokenInput.value = fromLink
  history.replaceState(null, '', location.pathname + location.search)
  void signIn()
}
