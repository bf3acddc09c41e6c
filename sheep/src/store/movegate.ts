// An object moves between the live and the set-aside directory (set aside,
// restored, or fetched anew and its old copy dropped) while a listing reads
// the two directories one after the other: moved in between, it is in
// neither reading, and a peer's recovery concludes the object is gone (found
// by churn scenario 1: a node restoring copies it had set aside listed 26
// objects to itself and 21 to the peer that asked meanwhile, which then
// never fetched the other 5). So moves wait while a listing runs, and a
// listing first waits for the moves in flight.
// Waiters are let in in the order they came (a stream of listings must not
// hold recovery's moves back for ever, nor moves the listings).
type Kind = 'move' | 'list';

export class MoveGate {
  private active: Kind | undefined;
  private inside = 0;
  private queue: { kind: Kind; go: () => void }[] = [];

  move<T>(fn: () => Promise<T>): Promise<T> {
    return this.run('move', fn);
  }

  list<T>(fn: () => Promise<T>): Promise<T> {
    return this.run('list', fn);
  }

  private async run<T>(kind: Kind, fn: () => Promise<T>): Promise<T> {
    if (!this.queue.length && (this.inside === 0 || this.active === kind)) {
      this.active = kind;
      this.inside++;
    } else {
      await new Promise<void>((go) => this.queue.push({ kind, go }));
    }
    try {
      return await fn();
    } finally {
      if (--this.inside === 0) this.admit();
    }
  }

  /** Let in the first waiter and every one of its kind right behind it. */
  private admit(): void {
    this.active = this.queue[0]?.kind;
    while (this.queue.length && this.queue[0].kind === this.active) {
      this.inside++;
      this.queue.shift()!.go();
    }
  }
}
