// Reference peer for plexus bench/ws.sh: /echo sends back, /broadcast publishes
// every message to every /broadcast connection (sender included).
// Usage: uws_echo --listen 127.0.0.1:PORT [--workers 1]
#include "App.h"
#include <cstdlib>
#include <cstring>
#include <string>
#include <iostream>

struct PerSocketData {};

int main(int argc, char **argv) {
    std::string host = "127.0.0.1";
    int port = 9001;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            std::string a = argv[++i];
            size_t c = a.rfind(':');
            host = a.substr(0, c);
            port = atoi(a.c_str() + c + 1);
        } else if (!strcmp(argv[i], "--workers") && i + 1 < argc) {
            i++; // always one thread
        } else {
            std::cerr << "usage: uws_echo --listen HOST:PORT [--workers 1]\n";
            return 2;
        }
    }
    uWS::App *app = new uWS::App();
    app->ws<PerSocketData>("/echo", {
        .compression = uWS::DISABLED,
        .maxPayloadLength = 64 * 1024 * 1024,
        .idleTimeout = 120,
        .maxBackpressure = 64 * 1024 * 1024,
        .closeOnBackpressureLimit = false,
        .resetIdleTimeoutOnSend = false,
        .sendPingsAutomatically = true,
        .message = [](auto *ws, std::string_view m, uWS::OpCode op) { ws->send(m, op, false); },
    }).ws<PerSocketData>("/broadcast", {
        .compression = uWS::DISABLED,
        .maxPayloadLength = 64 * 1024 * 1024,
        .idleTimeout = 120,
        .maxBackpressure = 64 * 1024 * 1024,
        .closeOnBackpressureLimit = false,
        .resetIdleTimeoutOnSend = false,
        .sendPingsAutomatically = true,
        .open = [](auto *ws) { ws->subscribe("b"); },
        .message = [app](auto *, std::string_view m, uWS::OpCode op) { app->publish("b", m, op, false); },
    }).listen(host, port, [&](auto *s) {
        if (!s) { std::cerr << "uws_echo: cannot listen on " << host << ":" << port << "\n"; exit(2); }
    }).run();
    return 0;
}
