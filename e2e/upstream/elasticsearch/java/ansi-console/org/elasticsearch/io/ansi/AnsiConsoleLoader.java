/*
 * Stateward: stands in for Elasticsearch's unpublished ansi-console tool.
 *
 * The server loads this class by name from lib/tools/ansi-console/ at boot and asks it for a
 * console to print to. Upstream answers "none" whenever stderr is not a terminal, which is
 * always the case for a server in a pod or a test (its output is a pipe or a file), so this
 * always answers "none" (null). Declared against Object so it needs nothing from the server
 * at compile time; the server only casts it to a Supplier.
 */
package org.elasticsearch.io.ansi;

import java.util.function.Supplier;

public class AnsiConsoleLoader implements Supplier<Object> {
    public AnsiConsoleLoader() {}

    @Override
    public Object get() {
        return null;
    }
}
