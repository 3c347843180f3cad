/**
 * The broker's client for the mobile app (React Native) and the web.
 *
 * `createBrokerClient` is openapi-fetch over the types generated from the API's own OpenAPI document
 * (`src/schema.d.ts`, `npm run generate`): every path, body and answer is checked by the compiler, and a
 * changed API fails `tsc` here before it fails on a phone. `uploadFile` is the flow the app follows, the same
 * calls in the same order as `broker upload` (app/client/): a ticket, the bytes straight to the store (one
 * presigned POST, or presigned part PUTs of exactly the sizes the ticket dictates, then completion), then the
 * upload's status until it is final, and the link to the result. With `resume` it picks up a multipart upload
 * an earlier run (or an earlier launch of the app) started, as `broker upload --resume` does: from the broker's
 * answers alone it learns which parts the store holds and the part size, and sends only the rest.
 *
 * Every failure is a `BrokerError` whose `code` is the API's stable code (`unsupported_type`,
 * `type_mismatch`, …) or one of the few this side adds (`ClientErrorCode`). No shape is copied by hand: the
 * types below are names for parts of the generated schema.
 */
import createClient, { type Client } from "openapi-fetch";
import type { components, paths } from "./schema";

type Schemas = components["schemas"];
export type Ticket = Schemas["TicketResponse"];
export type UploadStatus = Schemas["UploadStatusResponse"];
export type Media = Schemas["MediaResponse"];
export type MediaKind = Schemas["CreateUploadRequest"]["kind"];
export type UploadContext = Schemas["UploadContext"];
/** Every code the API documents: its refusals and the reasons an upload is rejected. */
export type ApiErrorCode = Schemas["ErrorDetail"]["code"];
/**
 * Codes of this client: `network_error` (no answer, retries exhausted), `store_<S3 code>` (the store refused
 * the bytes, e.g. `store_AccessDenied`), `http_<status>` (an answer without the API's error shape, such as a
 * proxy's error page), `timeout` (still processing when `timeoutMs` ran out: the upload goes on, poll it
 * later), `aborted` (the caller's signal), `upload_<status>` (the upload ended `expired` or `deleted`),
 * `not_the_same_file` (resuming: the file does not fit the parts the store holds, as in `broker upload`).
 */
export type ClientErrorCode =
  | "network_error"
  | "not_the_same_file"
  | `store_${string}`
  | `http_${number}`
  | "timeout"
  | "aborted"
  | `upload_${UploadStatus["status"]}`;
// `string & {}` keeps editor completion of the known codes while admitting codes a newer API adds.
export type ErrorCode = ApiErrorCode | ClientErrorCode | (string & {});

export type BrokerClient = Client<paths>;

export class BrokerError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** the HTTP status of the answer that carried the error, if one did */
    readonly status?: number,
    /** the upload's id once it has one: poll it (`timeout`) or cancel it */
    readonly uploadId?: string,
    /** the upload's final status, for `rejected` and `failed` uploads */
    readonly upload?: UploadStatus,
  ) {
    super(`${code}: ${message}`);
    this.name = "BrokerError";
  }
}

export interface BrokerClientOptions {
  /** the API's root, e.g. `https://media.example.com` */
  baseUrl: string;
  /** the user's JWT, or a function that answers a fresh one (asked before every call: tokens expire) */
  token: string | (() => string | Promise<string>);
  /** a fetch to use instead of the global one (tests, instrumentation) */
  fetch?: (input: Request) => Promise<Response>;
}

export function createBrokerClient({ baseUrl, token, fetch }: BrokerClientOptions): BrokerClient {
  const client = createClient<paths>(fetch ? { baseUrl, fetch } : { baseUrl });
  client.use({
    async onRequest({ request }) {
      request.headers.set("Authorization", `Bearer ${typeof token === "string" ? token : await token()}`);
      return request;
    },
  });
  return client;
}

/**
 * A file on the phone as React Native's FormData takes it (`{ uri, name, type }`, e.g. from an image
 * picker). `size` is the exact byte count the ticket will pin; when the picker does not report it, it is read
 * from the file.
 */
export interface NativeFile {
  uri: string;
  name: string;
  type: string;
  size?: number;
}

/**
 * A new upload needs its kind; resuming one needs only its id, so an app that kept nothing but the id (and
 * the file) can resume, and an app can also make the same call either way with `resume: savedId`.
 */
export type UploadOptions = FileOptions &
  (
    | { kind: MediaKind; resume?: string | undefined }
    | {
        kind?: MediaKind | undefined;
        /**
         * The `upload_id` of a multipart upload this file started (kept from `onTicket`): send only the parts
         * the store lacks, complete, then wait as for a new upload. An upload that is already complete is
         * only waited for. Its ticket fixed the kind, type, size and part size, so the ticket options below
         * are not used, and `onTicket` is not called (there is no new ticket). Refusals carry the API's code:
         * `not_found`, `not_multipart` (a POST cannot be resumed: upload again), `upload_closed` (expired or
         * cancelled); a file that does not fit the stored parts is `not_the_same_file`.
         */
        resume: string;
      }
  );

export interface FileOptions {
  /** a Blob or File (web, Node), or a React Native file */
  file: Blob | NativeFile;
  /** default: the file's own type */
  contentType?: string;
  /** kept as metadata (a document's download name); default: the file's name */
  filename?: string;
  context?: UploadContext;
  /** ask for parts even under the multipart threshold (files of at least 5 MiB) */
  resumable?: boolean;
  /** parts in flight at once (multipart); default 4 */
  parallel?: number;
  /** tries after the first for each part or POST, with a doubling delay; default 4 */
  retries?: number;
  /** between two status polls; default 1000 ms */
  pollIntervalMs?: number;
  /** how long to wait for the processed result; default 10 minutes */
  timeoutMs?: number;
  signal?: AbortSignal;
  /**
   * called with a new upload's ticket before any byte is sent: keep `upload_id` to resume (multipart), poll
   * or cancel after a restart
   */
  onTicket?: (ticket: Ticket) => void;
  /** bytes the store has confirmed so far, out of the file's size */
  onProgress?: (sentBytes: number, totalBytes: number) => void;
}

export interface UploadResult {
  /** the final status: `ready`, with `media` (dimensions, duration, pages, variant names) */
  upload: UploadStatus;
  /** the link to the processed file (CDN, or presigned for 60 s when private) and its variants' links */
  media: Media;
}

/**
 * Ticket → bytes to the store → status until final → link; or, with `resume`, the missing parts → status
 * until final → link. Throws `BrokerError` for every failure.
 */
export async function uploadFile(client: BrokerClient, options: UploadOptions): Promise<UploadResult> {
  if (isResume(options)) return resumeUpload(client, options.resume, options);
  const { file, signal } = options;
  const native = isNativeFile(file);
  const size = native ? (file.size ?? (await nativeBlob(file, signal)).size) : file.size;
  const filename = options.filename ?? (native ? file.name : fileName(file));
  const ticket = await api(
    client.POST("/v1/uploads", {
      body: {
        kind: options.kind,
        // An empty type is the API's to refuse (415 `unsupported_type`), like any other it does not take.
        content_type: options.contentType ?? file.type,
        size,
        ...(filename === undefined ? {} : { filename }),
        ...(options.resumable === undefined ? {} : { resumable: options.resumable }),
        ...(options.context === undefined ? {} : { context: options.context }),
      },
      ...(signal ? { signal } : {}),
    }),
    signal,
  );
  options.onTicket?.(ticket);
  const transfer = newTransfer(client, ticket.upload_id, file, size, options);
  const plan = ticket.upload;
  if (plan.method === "POST") {
    await postToStore(transfer, plan, filename);
  } else {
    const job = { partSize: plan.part_size, partCount: plan.part_count, stored: new Map<number, StoredPart>() };
    await sendParts(transfer, job, range(1, plan.part_count), options.parallel ?? 4);
  }
  return waitForResult(client, ticket.upload_id, options);
}

// Statuses of an upload whose bytes are all in (completed before the interruption): resuming only waits.
const PAST_THE_BYTES = new Set<UploadStatus["status"]>([
  "uploaded",
  "processing",
  "ready",
  "rejected",
  "failed",
  "superseded",
]);

/**
 * `broker upload --resume` (app/client/flow.py): the upload's status, the parts the store holds, the part
 * size from the length the broker signs into part 1's URL, then only the missing parts and completion.
 */
async function resumeUpload(client: BrokerClient, uploadId: string, options: UploadOptions): Promise<UploadResult> {
  const { signal } = options;
  const path = { params: { path: { upload_id: uploadId } }, ...(signal ? { signal } : {}) };
  const { status } = await api(client.GET("/v1/uploads/{upload_id}", path), signal, uploadId);
  if (PAST_THE_BYTES.has(status)) return waitForResult(client, uploadId, options);
  // Pending, expired or deleted: the broker judges whether parts can still come (`not_multipart`,
  // `upload_closed`), so the caller gets the API's code rather than one guessed here.
  const listed = await api(client.GET("/v1/uploads/{upload_id}/parts", path), signal, uploadId);
  const source = isNativeFile(options.file) ? await nativeBlob(options.file, signal) : options.file;
  const transfer = newTransfer(client, uploadId, source, source.size, options);
  // Part 1's URL is asked for even when part 1 is stored: its signed length is the only place the broker
  // states the part size (a new upload gets it in the ticket).
  const [first] = (await askForUrls(transfer, [1])).values();
  const partSize = Number(first?.headers["Content-Length"]);
  if (!first || !Number.isSafeInteger(partSize) || partSize <= 0) {
    throw new BrokerError("invalid_request", "the broker signed no length into part 1's URL", undefined, uploadId);
  }
  if (partSize > source.size) {
    throw notTheSameFile(uploadId, `the upload's first part is ${partSize} bytes, the whole file only ${source.size}`);
  }
  const job: PartsJob = {
    partSize,
    partCount: Math.ceil(source.size / partSize),
    stored: new Map(listed.parts.map((part) => [part.part_number, part])),
    known: first,
  };
  for (const part of job.stored.values()) {
    // A stored part that this file would cut differently means another file, or this one changed: completing
    // would be refused (or worse, join two files' bytes), so stop before sending anything.
    const expected = part.part_number <= job.partCount ? partLength(job, part.part_number, source.size) : 0;
    if (part.size !== expected) {
      throw notTheSameFile(
        uploadId,
        `the store holds part ${part.part_number} with ${part.size} bytes; the file's is ${expected}`,
      );
    }
  }
  const missing = range(1, job.partCount).filter((number) => !job.stored.has(number));
  await sendParts(transfer, job, missing, options.parallel ?? 4);
  return waitForResult(client, uploadId, options);
}

// A guard, not `options.resume !== undefined`: TS narrows a union only on literal types, and `resume` is a
// string, so the guard is what tells the compiler that a new upload has its `kind`.
function isResume(options: UploadOptions): options is FileOptions & { resume: string } {
  return options.resume !== undefined;
}

function notTheSameFile(uploadId: string, message: string): BrokerError {
  return new BrokerError("not_the_same_file", message, undefined, uploadId);
}

// --- the bytes ---------------------------------------------------------------------------------------------

interface Transfer {
  client: BrokerClient;
  uploadId: string;
  file: Blob | NativeFile;
  size: number;
  retries: number;
  progress: (sentBytes: number) => void;
  signal?: AbortSignal;
}

function newTransfer(
  client: BrokerClient,
  uploadId: string,
  file: Blob | NativeFile,
  size: number,
  options: UploadOptions,
): Transfer {
  const { signal } = options;
  return {
    client,
    uploadId,
    file,
    size,
    retries: options.retries ?? 4,
    progress: (sent) => options.onProgress?.(sent, size),
    ...(signal ? { signal } : {}),
  };
}

type PresignedPost = Schemas["PresignedPost"];
type PartUrl = Schemas["PartUrl"];
type StoredPart = Schemas["StoredPartInfo"];

/** A multipart upload's parts: how the file is cut, and what the store already holds (resuming). */
interface PartsJob {
  partSize: number;
  partCount: number;
  /** the parts the store holds, by number: their etags go into completion as they are */
  stored: Map<number, StoredPart>;
  /** a part URL already in hand (resuming asks for part 1's to learn the part size) */
  known?: PartUrl;
}

/** Part `number`'s length: the part size, the last part the remainder (the same cut as the broker's). */
function partLength(job: PartsJob, number: number, size: number): number {
  return Math.min(job.partSize, size - (number - 1) * job.partSize);
}

// The API hands out part URLs 100 at a time at most (PartUrlsRequest).
const PART_URLS_PER_CALL = 100;
// A part URL this close to its expiry is asked for again rather than sent and refused halfway.
const EXPIRY_MARGIN_MS = 30_000;

async function postToStore(transfer: Transfer, plan: PresignedPost, filename: string | undefined) {
  const { file } = transfer;
  await withRetries(transfer, async () => {
    // A FormData is consumed by its request: a new one per try. The policy's fields first, the file last
    // (S3 ignores fields after the file).
    const form = new FormData();
    for (const [name, value] of Object.entries(plan.fields)) form.append(name, value);
    if (isNativeFile(file)) {
      // React Native's FormData streams `{ uri, name, type }` from disk; the DOM typing knows only Blob.
      form.append("file", { uri: file.uri, name: file.name, type: file.type } as unknown as Blob);
    } else {
      form.append("file", file, filename ?? "upload");
    }
    await storeRequest(transfer, plan.url, { method: "POST", body: form });
  });
  transfer.progress(transfer.size);
}

/** Presigned PUTs for `numbers`, by part number. */
function askForUrls(transfer: Transfer, numbers: number[]): Promise<Map<number, PartUrl>> {
  const { client, uploadId, signal } = transfer;
  return api(
    client.POST("/v1/uploads/{upload_id}/parts", {
      params: { path: { upload_id: uploadId } },
      body: { part_numbers: numbers },
      ...(signal ? { signal } : {}),
    }),
    signal,
    uploadId,
  ).then((answer) => new Map(answer.parts.map((part) => [part.part_number, part])));
}

/** Send the parts `numbers` (ascending), `parallel` at a time, then complete with every part's etag. */
async function sendParts(transfer: Transfer, job: PartsJob, numbers: number[], parallel: number) {
  const { client, uploadId, signal } = transfer;
  const source = isNativeFile(transfer.file) ? await nativeBlob(transfer.file, signal) : transfer.file;
  const windows = new Map<number, Promise<Map<number, PartUrl>>>();
  // URLs are asked for a window of the parts to send at a time, as the senders reach it, not all 10,000 up
  // front (and never for parts the store already holds).
  const urlFor = async (index: number): Promise<PartUrl> => {
    const number = numbers[index] as number;
    if (job.known?.part_number === number) return job.known;
    const window = Math.floor(index / PART_URLS_PER_CALL);
    let urls = windows.get(window);
    if (!urls) {
      urls = askForUrls(transfer, numbers.slice(window * PART_URLS_PER_CALL, (window + 1) * PART_URLS_PER_CALL));
      windows.set(window, urls);
    }
    const url = (await urls).get(number);
    if (!url) throw new BrokerError("invalid_request", `no URL for part ${number}`, undefined, uploadId);
    return url;
  };

  const etags = new Map<number, string>([...job.stored].map(([number, part]) => [number, part.etag]));
  let next = 0;
  // What the store already holds counts as sent: a resumed upload's progress starts where the last run ended.
  let sent = transfer.size - numbers.reduce((total, number) => total + partLength(job, number, transfer.size), 0);
  if (sent > 0) transfer.progress(sent);
  const sender = async () => {
    while (next < numbers.length) {
      const index = next++;
      const number = numbers[index] as number;
      const start = (number - 1) * job.partSize;
      const bytes = source.slice(start, start + partLength(job, number, transfer.size));
      let part = await urlFor(index);
      const etag = await withRetries(transfer, async (attempt) => {
        if (attempt > 0 && Date.parse(part.expires_at) - Date.now() < EXPIRY_MARGIN_MS) {
          part = (await askForUrls(transfer, [number])).get(number) ?? part;
        }
        return putPart(transfer, part, bytes);
      });
      etags.set(number, etag);
      sent += bytes.size;
      transfer.progress(sent);
    }
  };
  await Promise.all(range(1, Math.min(Math.max(parallel, 1), numbers.length)).map(sender));

  const parts = [...etags].sort(([a], [b]) => a - b).map(([part_number, etag]) => ({ part_number, etag }));
  await api(
    client.POST("/v1/uploads/{upload_id}/complete", {
      params: { path: { upload_id: uploadId } },
      body: { parts },
      ...(signal ? { signal } : {}),
    }),
    signal,
    uploadId,
  );
}

async function putPart(transfer: Transfer, part: PartUrl, bytes: Blob): Promise<string> {
  // Each URL signs its part's exact length. Content-Length itself is the runtime's to set (browsers refuse
  // it from scripts) from the body, so the body must have exactly the length the ticket dictates.
  const headers = Object.entries(part.headers).filter(([name]) => name.toLowerCase() !== "content-length");
  const signed = part.headers["Content-Length"];
  if (signed !== undefined && Number(signed) !== bytes.size) {
    throw new BrokerError(
      "size_mismatch",
      `part ${part.part_number} is ${bytes.size} bytes, its URL signs ${signed}`,
      undefined,
      transfer.uploadId,
    );
  }
  const response = await storeRequest(transfer, part.url, { method: part.method, headers, body: bytes });
  const etag = response.headers.get("ETag");
  if (!etag) {
    // In a browser the bucket's CORS rules must expose ETag; without it the upload cannot be completed.
    throw new BrokerError("store_NoETag", "the store's answer carries no readable ETag", response.status);
  }
  return etag;
}

/** One request to the store; a refusal becomes `store_<S3 code>` (retried only when the store says so). */
async function storeRequest(transfer: Transfer, url: string, init: RequestInit): Promise<Response> {
  const response = await send(url, { ...init, ...(transfer.signal ? { signal: transfer.signal } : {}) });
  if (response.ok) return response;
  const text = await response.text().catch(() => "");
  const code = /<Code>([^<]+)<\/Code>/.exec(text)?.[1] ?? `HTTP${response.status}`;
  const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1] ?? text.slice(0, 200);
  const error = new BrokerError(`store_${code}`, message, response.status, transfer.uploadId);
  throw response.status >= 500 || /expired/i.test(message) ? new Retryable(error) : error;
}

class Retryable extends Error {
  constructor(readonly error: BrokerError) {
    super(error.message);
  }
}

/** `attempt` up to 1 + `retries` times, doubling the delay (0.5 s, 1 s, 2 s, …) after a dropped connection
 * or a store error worth another try; anything else is thrown at once. */
async function withRetries<T>(transfer: Transfer, attempt: (index: number) => Promise<T>): Promise<T> {
  for (let index = 0; ; index++) {
    try {
      return await attempt(index);
    } catch (error) {
      const retryable = error instanceof Retryable;
      if (!retryable || index >= transfer.retries) throw retryable ? error.error : error;
      await sleep(500 * 2 ** index, transfer.signal);
    }
  }
}

// --- the result --------------------------------------------------------------------------------------------

const FINAL = new Set<UploadStatus["status"]>(["ready", "rejected", "failed", "expired", "deleted", "superseded"]);

async function waitForResult(client: BrokerClient, uploadId: string, options: UploadOptions): Promise<UploadResult> {
  const { signal } = options;
  const deadline = Date.now() + (options.timeoutMs ?? 10 * 60_000);
  const path = { params: { path: { upload_id: uploadId } }, ...(signal ? { signal } : {}) };
  for (;;) {
    const upload = await api(client.GET("/v1/uploads/{upload_id}", path), signal, uploadId);
    if (upload.status === "ready") {
      return { upload, media: await api(client.GET("/v1/media/{upload_id}", path), signal, uploadId) };
    }
    if (FINAL.has(upload.status)) {
      const code = upload.error?.code ?? `upload_${upload.status}`;
      const message = upload.error?.message ?? `the upload ended ${upload.status}`;
      throw new BrokerError(code, message, undefined, uploadId, upload);
    }
    if (Date.now() >= deadline) {
      throw new BrokerError("timeout", `upload ${uploadId} is still ${upload.status}`, undefined, uploadId);
    }
    await sleep(options.pollIntervalMs ?? 1000, signal);
  }
}

// --- helpers -----------------------------------------------------------------------------------------------

type ApiAnswer<T> =
  | { data: T; error?: never; response: Response }
  | { data?: never; error: unknown; response: Response };

/** An API call's data, or its `{"error": {"code", "message"}}` as a `BrokerError`. */
async function api<T>(call: Promise<ApiAnswer<T>>, signal?: AbortSignal, uploadId?: string): Promise<T> {
  let answer: ApiAnswer<T>;
  try {
    answer = await call;
  } catch (error) {
    throw networkError(error, signal);
  }
  if (answer.error === undefined) return answer.data as T;
  const status = answer.response.status;
  const detail = isErrorResponse(answer.error) ? answer.error.error : undefined;
  const code = detail?.code ?? `http_${status}`;
  throw new BrokerError(code, detail?.message ?? answer.response.statusText, status, uploadId);
}

function isErrorResponse(body: unknown): body is Schemas["ErrorResponse"] {
  const error = typeof body === "object" && body !== null ? (body as { error?: unknown }).error : undefined;
  return typeof error === "object" && error !== null && typeof (error as { code?: unknown }).code === "string";
}

/** fetch, with a dropped connection made retryable (and an abort reported as such). */
async function send(url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (error) {
    const failure = networkError(error, init.signal ?? undefined);
    throw failure.code === "network_error" ? new Retryable(failure) : failure;
  }
}

function networkError(error: unknown, signal: AbortSignal | undefined): BrokerError {
  if (error instanceof BrokerError) return error;
  if (signal?.aborted) return new BrokerError("aborted", "the upload was cancelled");
  return new BrokerError("network_error", error instanceof Error ? error.message : String(error));
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new BrokerError("aborted", "the upload was cancelled"));
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(new BrokerError("aborted", "the upload was cancelled"));
      },
      { once: true },
    );
  });
}

function isNativeFile(file: Blob | NativeFile): file is NativeFile {
  return typeof (file as NativeFile).uri === "string";
}

/** The file's bytes as a Blob, for its size or its parts (React Native's fetch reads `file://` URIs). */
async function nativeBlob(file: NativeFile, signal: AbortSignal | undefined): Promise<Blob> {
  try {
    return await (await fetch(file.uri, signal ? { signal } : {})).blob();
  } catch (error) {
    throw networkError(error, signal);
  }
}

function fileName(blob: Blob): string | undefined {
  const name = (blob as Partial<File>).name;
  return typeof name === "string" && name !== "" ? name : undefined;
}

function range(first: number, last: number): number[] {
  return Array.from({ length: Math.max(0, last - first + 1) }, (_, index) => first + index);
}
