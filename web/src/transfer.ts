// The bytes' trip to the store, under @uppy/aws-s3's own `uploadPartBytes` hook.
//
// Parts (PUT) go through Uppy's sender unchanged: it needs each part's ETag (the bucket's CORS exposes it) and
// retries what S3 says is worth retrying. The presigned form POST gets a sender of its own, because Uppy's
// waits for an ETag header on the POST's answer too, and a store that answers 204 without one (the local
// stack's does) would leave the file "uploading" forever; the broker never needs that ETag (the store reports
// the object itself). Both turn a refusal's XML into the `store_<Code>` the CLI prints.

import AwsS3, { type AwsS3UploadParameters, type UploadPartBytesResult } from '@uppy/aws-s3'

import { BrokerError } from './broker'

interface SendOptions {
  signature: AwsS3UploadParameters
  body: FormData | Blob
  size?: number
  onProgress: (event: { loaded: number; lengthComputable: boolean }) => void
  onComplete: (etag: string) => void
  signal?: AbortSignal
}

export async function uploadBytes(options: SendOptions): Promise<UploadPartBytesResult> {
  if ((options.signature.method ?? 'PUT').toUpperCase() === 'POST') return postForm(options)
  try {
    return await AwsS3.uploadPartBytes(options)
  } catch (error) {
    const xhr = (error as { source?: XMLHttpRequest }).source
    // "Request has expired" is Uppy's cue to sign the part again: leave that error as it is.
    if (!(xhr instanceof XMLHttpRequest) || (error as Error).message === 'Request has expired') throw error
    throw Object.assign(storeError(xhr), { source: xhr })
  }
}

function postForm({ signature, body, size, onProgress, onComplete, signal }: SendOptions): Promise<UploadPartBytesResult> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest()
    xhr.open('POST', signature.url, true)
    xhr.responseType = 'text'
    const abort = () => xhr.abort()
    signal?.addEventListener('abort', abort)
    const done = () => signal?.removeEventListener('abort', abort)
    xhr.upload.addEventListener('progress', onProgress)
    xhr.addEventListener('abort', () => {
      done()
      reject(new DOMException('the upload was cancelled', 'AbortError'))
    })
    xhr.addEventListener('error', () => {
      done()
      reject(Object.assign(new BrokerError('store_unreachable', `no answer from ${signature.url}`, 0), { source: xhr }))
    })
    xhr.addEventListener('load', () => {
      done()
      if (xhr.status < 200 || xhr.status >= 300) {
        reject(Object.assign(storeError(xhr), { source: xhr }))
        return
      }
      const total = size ?? (body instanceof Blob ? body.size : 0)
      onProgress({ loaded: total, lengthComputable: true })
      const headers = exposedHeaders(xhr)
      const etag = headers.etag ?? ''
      onComplete(etag)
      resolve({ ETag: etag, location: headers.location })
    })
    xhr.send(body)
  })
}

/** The response headers CORS lets the page read (getResponseHeader would log an error for any other). */
function exposedHeaders(xhr: XMLHttpRequest): Record<string, string | undefined> {
  const headers: Record<string, string | undefined> = {}
  for (const line of xhr.getAllResponseHeaders().trim().split(/[\r\n]+/)) {
    const at = line.indexOf(':')
    if (at > 0) headers[line.slice(0, at).trim().toLowerCase()] = line.slice(at + 1).trim()
  }
  return headers
}

/** S3's `<Error><Code>…</Code><Message>…</Message></Error>` as `store_<Code>: <Message>`. */
function storeError(xhr: XMLHttpRequest): BrokerError {
  const xml = new DOMParser().parseFromString(xhr.responseText || '<Error/>', 'application/xml')
  const code = xml.querySelector('Error > Code')?.textContent || `http_${xhr.status}`
  const message = xml.querySelector('Error > Message')?.textContent || xhr.statusText || 'refused by the store'
  return new BrokerError(`store_${code}`, message, xhr.status)
}
