/* epoll backend of the loop, included by loop.c only (Redis ae_epoll.c habit):
 * swapping in io_uring or kqueue means another file like this one. */

static int backend_create(px_loop_t *loop)
{
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    return loop->epfd < 0 ? -errno : 0;
}

static void backend_destroy(px_loop_t *loop)
{
    if (loop->epfd >= 0)
        close(loop->epfd);
}

static uint32_t to_epoll(unsigned events)
{
    uint32_t e = 0;
    if (events & PX_READABLE)
        e |= EPOLLIN | EPOLLRDHUP;
    if (events & PX_WRITABLE)
        e |= EPOLLOUT;
    if (events & PX_EXCLUSIVE)
        e = (e & ~(uint32_t)EPOLLRDHUP) | EPOLLEXCLUSIVE; /* epoll_ctl: EINVAL with EPOLLRDHUP */
    return e;
}

static unsigned from_epoll(uint32_t e)
{
    unsigned events = 0;
    if (e & (EPOLLIN | EPOLLRDHUP))
        events |= PX_READABLE;
    if (e & EPOLLOUT)
        events |= PX_WRITABLE;
    if (e & (EPOLLHUP | EPOLLERR))
        events |= PX_HUP | PX_READABLE;
    return events;
}

static int backend_ctl(px_loop_t *loop, px_io_t *io, int op, unsigned events)
{
    struct epoll_event ev = {.events = to_epoll(events), .data.ptr = io};
    if (epoll_ctl(loop->epfd, op, io->fd, &ev) != 0)
        return -errno;
    return 0;
}

static int backend_del(px_loop_t *loop, px_io_t *io)
{
    /* The fd may already be closed by its owner: EBADF/ENOENT are fine. */
    if (epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL) != 0)
        return -errno;
    return 0;
}

static int backend_poll(px_loop_t *loop, int timeout_ms)
{
    int n = epoll_wait(loop->epfd, loop->events, PX__LOOP_MAX_EVENTS, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    return n;
}
