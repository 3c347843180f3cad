// The broker's API as the page uses it: same origin, bearer token, errors as `{error: {code, message}}`.
// Only the shapes the page reads are typed here; the full contract is /openapi.json.

export interface PresignedPost {
  method: 'POST'
  url: string
  fields: Record<string, string>
}

export interface MultipartPlan {
  method: 'MULTIPART'
  part_size: number
  part_count: number
  parts_url: string
  complete_url: string
}

export interface Ticket {
  upload_id: string
  status: string
  expires_at: string
  max_size: number
  upload: PresignedPost | MultipartPlan
}

export interface TicketRequest {
  kind: string
  content_type: string
  size: number
  filename: string
  resumable?: boolean
  context?: Record<string, string>
}

export interface PartUrl {
  part_number: number
  url: string
  method: 'PUT'
  headers: Record<string, string>
  expires_at: string
}

export interface StoredPart {
  part_number: number
  etag: string
  size: number
}

export interface UploadStatus {
  upload_id: string
  kind: string
  status: string
  media?: { content_type: string; bytes: number; width?: number; height?: number }
  error?: { code: string; message: string }
}

export interface Link {
  content_type: string
  bytes: number
  width?: number
  height?: number
  url: string
  url_expires_at?: string
}

export interface Media extends Link {
  upload_id: string
  kind: string
  duration_seconds?: number
  codecs?: string
  pages?: number
  version?: number
  variants?: Record<string, Link>
}

// States after which an upload never changes on its own (DESIGN.md, "Upload states").
export const FINAL_STATES = new Set(['ready', 'rejected', 'failed', 'expired', 'deleted', 'superseded'])

/** A refusal with the broker's (or the store's) stable code, shown to the user as `code: message`. */
export class BrokerError extends Error {
  readonly code: string
  readonly detail: string
  readonly status: number

  constructor(code: string, detail: string, status: number) {
    super(`${code}: ${detail}`) // what Uppy shows on the file
    this.code = code
    this.detail = detail
    this.status = status
  }
}

export class Broker {
  token = ''

  async request<T>(method: string, url: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.token}` }
    if (body !== undefined) headers['Content-Type'] = 'application/json'
    const response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    })
    if (response.status === 204) return undefined as T
    const text = await response.text()
    let parsed: unknown = undefined
    try {
      parsed = text ? JSON.parse(text) : undefined
    } catch {
      // not JSON: reported below with the status
    }
    if (!response.ok) {
      const error = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error
      throw new BrokerError(
        error?.code ?? `http_${response.status}`,
        error?.message ?? (text.slice(0, 200) || response.statusText),
        response.status,
      )
    }
    return parsed as T
  }

  /** Any authenticated call answers 401 for a bad token; listing one item of the caller's media is cheapest. */
  checkToken(): Promise<unknown> {
    return this.request('GET', '/v1/media?limit=1')
  }

  ticket(body: TicketRequest): Promise<Ticket> {
    return this.request('POST', '/v1/uploads', body)
  }

  partUrls(plan: MultipartPlan, numbers: number[], signal?: AbortSignal): Promise<{ parts: PartUrl[] }> {
    return this.request('POST', plan.parts_url, { part_numbers: numbers }, signal)
  }

  storedParts(plan: MultipartPlan, signal?: AbortSignal): Promise<{ parts: StoredPart[] }> {
    return this.request('GET', plan.parts_url, undefined, signal)
  }

  complete(
    plan: MultipartPlan,
    parts: { part_number: number; etag: string }[],
    signal?: AbortSignal,
  ): Promise<{ upload_id: string; status: string }> {
    return this.request('POST', plan.complete_url, { parts }, signal)
  }

  cancel(uploadId: string): Promise<void> {
    return this.request('DELETE', `/v1/uploads/${uploadId}`)
  }

  status(uploadId: string): Promise<UploadStatus> {
    return this.request('GET', `/v1/uploads/${uploadId}`)
  }

  media(uploadId: string): Promise<Media> {
    return this.request('GET', `/v1/media/${uploadId}`)
  }
}

/** The token's subject and roles, for display only: the broker checks the signature, the page cannot. */
export function tokenClaims(token: string): { sub?: string; roles?: string[] } {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')
    return JSON.parse(atob(payload)) as { sub?: string; roles?: string[] }
  } catch {
    return {}
  }
}
