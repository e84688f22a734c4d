import type { HttpClient } from './http.js';
import type { ListParams, PageMeta } from './types.js';

/** One page of a list endpoint. */
export interface Page<T> {
  items: T[];
  meta: PageMeta;
}

/**
 * A list that fetches its pages lazily. Iterate with `for await (const item of list)`
 * (page after page until `meta.has_next` is false), walk `pages()`, or `await` it to get every
 * item of every page in an array.
 *
 * Items are de-duplicated by id across pages, so a row that shifts onto the next page while you
 * iterate (something created meanwhile) is not returned twice.
 */
export class Paginator<T> implements AsyncIterable<T>, PromiseLike<T[]> {
  constructor(
    private readonly http: HttpClient,
    private readonly path: string,
    private readonly params: ListParams & Record<string, string | number | undefined>,
    private readonly wrap: (raw: never) => T,
    private readonly key: (item: T) => string,
  ) {}

  /** Every page from `params.page` (default 1) on. */
  async *pages(): AsyncGenerator<Page<T>, void, undefined> {
    let page = this.params.page ?? 1;
    for (;;) {
      const res = await this.http.request<unknown[]>('GET', this.path, {
        query: { ...this.params, page },
      });
      const meta = res.meta as unknown as PageMeta;
      yield { items: res.data.map((raw) => this.wrap(raw as never)), meta };
      if (!meta.has_next || res.data.length === 0) return;
      page = meta.page + 1;
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T, void, undefined> {
    const seen = new Set<string>();
    for await (const page of this.pages()) {
      for (const item of page.items) {
        const id = this.key(item);
        if (seen.has(id)) continue;
        seen.add(id);
        yield item;
      }
    }
  }

  /** Only the first page (from `params.page`), with its pagination meta. */
  async firstPage(): Promise<Page<T>> {
    for await (const page of this.pages()) return page;
    throw new Error('unreachable: pages() yields at least one page');
  }

  /** Every item of every page. */
  async toArray(): Promise<T[]> {
    const out: T[] = [];
    for await (const item of this) out.push(item);
    return out;
  }

  then<R1 = T[], R2 = never>(
    onfulfilled?: ((value: T[]) => R1 | PromiseLike<R1>) | null,
    onrejected?: ((reason: unknown) => R2 | PromiseLike<R2>) | null,
  ): Promise<R1 | R2> {
    return this.toArray().then(onfulfilled, onrejected);
  }
}
