/**
 * The broker's client for the mobile app (React Native) and the web.
 *
 * `createBrokerClient` is openapi-fetch over the types generated from the API's own OpenAPI document
 * (`src/schema.d.ts`, `npm run generate`): every path, body and answer is checked by the compiler, and a
 * changed API fails `tsc` here before it fails on a phone. `uploadFile` is the flow the app follows, the same
 * calls in the same order as `broker upload` (app/client/): a ticket, the bytes straight to the store (one
 * presigned POST, or presigned part PUTs of exactly the sizes the ticket dictates, then completion), then the
 * upload's status until it is final, and the link to the result.
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
 * later), `aborted` (the caller's signal), `upload_<status>` (the upload ended `expired` or `deleted`).
 */
export type ClientErrorCode =
  | "network_error"
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

export interface UploadOptions {
  kind: MediaKind;
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
  /** called with the ticket before any byte is sent: keep `upload_id` to poll or cancel after a restart */
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

/** Ticket → bytes to the store → status until final → link. Throws `BrokerError` for every failure. */
export async function uploadFile(client: BrokerClient, options: UploadOptions): Promise<UploadResult> {
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
  const transfer: Transfer = {
    client,
    ticket,
    file,
    size,
    retries: options.retries ?? 4,
    progress: (sent) => options.onProgress?.(sent, size),
    ...(signal ? { signal } : {}),
  };
  const plan = ticket.upload;
  if (plan.method === "POST") {
    await postToStore(transfer, plan, filename);
  } else {
    await sendParts(transfer, plan, options.parallel ?? 4);
  }
  return waitForResult(client, ticket.upload_id, options);
}

// --- the bytes ---------------------------------------------------------------------------------------------

interface Transfer {
  client: BrokerClient;
  ticket: Ticket;
  file: Blob | NativeFile;
  size: number;
  retries: number;
  progress: (sentBytes: number) => void;
  signal?: AbortSignal;
}

type PresignedPost = Schemas["PresignedPost"];
type MultipartPlan = Schemas["MultipartPlan"];
type PartUrl = Schemas["PartUrl"];

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

async function sendParts(transfer: Transfer, plan: MultipartPlan, parallel: number) {
  const { client, ticket, signal } = transfer;
  const uploadId = ticket.upload_id;
  const source = isNativeFile(transfer.file) ? await nativeBlob(transfer.file, signal) : transfer.file;
  const windows = new Map<number, Promise<Map<number, PartUrl>>>();
  const askForUrls = (numbers: number[]) =>
    api(
      client.POST("/v1/uploads/{upload_id}/parts", {
        params: { path: { upload_id: uploadId } },
        body: { part_numbers: numbers },
        ...(signal ? { signal } : {}),
      }),
      signal,
      uploadId,
    ).then((answer) => new Map(answer.parts.map((part) => [part.part_number, part])));
  // URLs are asked for a window at a time, as the senders reach it, not all 10,000 up front.
  const urlFor = async (number: number): Promise<PartUrl> => {
    const window = Math.floor((number - 1) / PART_URLS_PER_CALL);
    let urls = windows.get(window);
    if (!urls) {
      const first = window * PART_URLS_PER_CALL + 1;
      const last = Math.min(first + PART_URLS_PER_CALL - 1, plan.part_count);
      urls = askForUrls(range(first, last));
      windows.set(window, urls);
    }
    const url = (await urls).get(number);
    if (!url) throw new BrokerError("invalid_request", `no URL for part ${number}`, undefined, uploadId);
    return url;
  };

  const etags = new Map<number, string>();
  let next = 1;
  let sent = 0;
  const sender = async () => {
    while (next <= plan.part_count) {
      const number = next++;
      const start = (number - 1) * plan.part_size;
      const bytes = source.slice(start, Math.min(start + plan.part_size, transfer.size));
      let part = await urlFor(number);
      const etag = await withRetries(transfer, async (attempt) => {
        if (attempt > 0 && Date.parse(part.expires_at) - Date.now() < EXPIRY_MARGIN_MS) {
          part = (await askForUrls([number])).get(number) ?? part;
        }
        return putPart(transfer, part, bytes);
      });
      etags.set(number, etag);
      sent += bytes.size;
      transfer.progress(sent);
    }
  };
  await Promise.all(range(1, Math.min(Math.max(parallel, 1), plan.part_count)).map(sender));

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
      transfer.ticket.upload_id,
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
  const error = new BrokerError(`store_${code}`, message, response.status, transfer.ticket.upload_id);
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
