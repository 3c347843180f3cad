// One row per file under the dashboard: how it travelled, the state the broker reports, the refusal code, and
// the processed result's links. Rows are built with DOM calls, never innerHTML: file names are user input.
// `data-file`, `data-state`, `data-method` and `data-code` are what the browser test reads.

import type { Media } from './broker'

export type Method = 'POST' | 'MULTIPART'

export class ResultRow {
  readonly element: HTMLLIElement
  readonly #state: HTMLSpanElement
  readonly #detail: HTMLDivElement
  readonly #code: HTMLDivElement
  readonly #links: HTMLDivElement
  readonly #progress: HTMLProgressElement

  constructor(list: HTMLElement, name: string, kind: string, size: number) {
    this.element = el('li', 'result')
    this.element.dataset.file = name
    const head = el('div', 'head')
    head.append(text('span', 'name', name), text('span', 'kind', kind), text('span', 'size', bytes(size)))
    this.#state = text('span', 'state', '')
    head.append(this.#state)
    this.#progress = el('progress')
    this.#progress.max = 1
    this.#progress.value = 0
    this.#detail = el('div', 'detail')
    this.#code = el('div', 'code')
    this.#links = el('div', 'links')
    this.element.append(head, this.#progress, this.#detail, this.#code, this.#links)
    list.prepend(this.element)
    this.setState('ticket', 'asking for a ticket')
  }

  /** `state` is the broker's (pending … ready) or the page's own: ticket, uploading, refused, store_failed. */
  setState(state: string, label = state): void {
    this.element.dataset.state = state
    this.#state.textContent = label
    this.#state.className = `state state-${state}`
  }

  ticketed(uploadId: string, method: Method, parts?: { count: number; size: number }): void {
    this.element.dataset.uploadId = uploadId
    this.element.dataset.method = method
    if (parts) this.element.dataset.parts = String(parts.count)
    const how =
      method === 'POST'
        ? 'one presigned POST'
        : `multipart: ${parts?.count} parts of ${bytes(parts?.size ?? 0)} (the last one the rest)`
    this.#detail.textContent = `upload ${uploadId} · ${how}`
    this.setState('uploading', 'uploading')
  }

  progress(done: number, total: number): void {
    this.#progress.value = total ? done / total : 0
  }

  uploaded(): void {
    this.#progress.value = 1
    this.#progress.hidden = true
  }

  refused(code: string, message: string, state = 'refused'): void {
    this.element.dataset.code = code
    this.#progress.hidden = true
    this.#code.replaceChildren(text('strong', '', code), document.createTextNode(` ${message}`))
    this.setState(state)
  }

  showMedia(media: Media, refresh: () => void): void {
    const facts = [media.content_type, bytes(media.bytes)]
    if (media.width && media.height) facts.push(`${media.width}×${media.height}`)
    if (media.duration_seconds != null) facts.push(`${media.duration_seconds.toFixed(1)} s`)
    if (media.codecs) facts.push(media.codecs)
    if (media.pages != null) facts.push(`${media.pages} page${media.pages === 1 ? '' : 's'}`)
    if (media.version != null) facts.push(`version ${media.version}`)
    const links: HTMLElement[] = []
    const poster = media.variants?.poster
    if (media.content_type.startsWith('image/')) {
      links.push(preview(media.url, 'processed image'), link(media.url, 'processed image'))
    } else if (poster) {
      links.push(preview(poster.url, 'poster'), link(poster.url, 'poster'), link(media.url, 'video'))
    } else if (media.content_type === 'application/pdf') {
      links.push(link(media.url, 'PDF'))
    } else {
      links.push(link(media.url, 'file'))
    }
    for (const [name, variant] of Object.entries(media.variants ?? {})) {
      if (name !== 'poster') links.push(link(variant.url, name))
    }
    if (media.url_expires_at) {
      // Private links live 60 s; a fresh set is one click away instead of a dead link.
      const again = text('button', 'refresh', 'new links')
      again.type = 'button'
      again.addEventListener('click', refresh)
      links.push(again)
    }
    this.#detail.append(document.createTextNode(` · ${facts.join(' · ')}`))
    this.#links.replaceChildren(...links)
  }
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className = ''): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag)
  if (className) node.className = className
  return node
}

function text<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  content: string,
): HTMLElementTagNameMap[K] {
  const node = el(tag, className)
  node.textContent = content
  return node
}

function link(url: string, label: string): HTMLAnchorElement {
  const anchor = text('a', 'link', label)
  anchor.href = url
  anchor.target = '_blank'
  anchor.rel = 'noopener noreferrer'
  anchor.dataset.link = label
  return anchor
}

function preview(url: string, label: string): HTMLImageElement {
  const image = el('img', 'preview')
  image.src = url
  image.alt = label
  image.dataset.preview = label
  image.referrerPolicy = 'no-referrer'
  return image
}

export function bytes(size: number): string {
  if (size < 1024) return `${size} B`
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`
  return `${(size / 1024 / 1024).toFixed(1)} MiB`
}
