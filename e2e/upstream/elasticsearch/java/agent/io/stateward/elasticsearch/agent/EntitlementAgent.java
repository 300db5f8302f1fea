/*
 * Stateward: the entitlement agent of an Elasticsearch assembled from Maven Central.
 *
 * Elasticsearch attaches an agent from lib/entitlement-agent/ to itself at boot and expects its
 * agentmain to hand the Instrumentation to the entitlement library, which then instruments the
 * JDK. Upstream builds that agent but does not publish it, so this stands in for it. The agent
 * lives in the unnamed module; EntitlementBootstrap exports the initialization package to it
 * before attaching, so a reflective call is all it takes.
 */
package io.stateward.elasticsearch.agent;

import java.lang.instrument.Instrumentation;
import java.lang.reflect.InvocationTargetException;

public final class EntitlementAgent {
    private static final String INITIALIZATION =
        "org.elasticsearch.entitlement.initialization.EntitlementInitialization";

    private EntitlementAgent() {}

    public static void agentmain(String args, Instrumentation instrumentation) {
        try {
            Class.forName(INITIALIZATION)
                .getMethod("initialize", Instrumentation.class)
                .invoke(null, instrumentation);
        } catch (InvocationTargetException e) {
            // An agent cannot throw checked exceptions; the server reports this as a boot failure.
            throw new IllegalStateException("entitlement initialization failed", e.getCause());
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException("cannot call " + INITIALIZATION + ".initialize", e);
        }
    }
}
